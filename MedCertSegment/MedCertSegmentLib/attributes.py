"""Names of the node attributes MedCert sets and reads (cheap: usable from the GUI before dependencies exist)."""

CERTIFICATE = "MedCert.certificate"  # JSON of the certificate record (core, evidence, annotations)
TRACE_ID = "MedCert.traceId"
KEY_ID = "MedCert.keyId"
SIDECAR = "MedCert.sidecar"
DICOM_SEG = "MedCert.dicomSeg"  # the DICOM SEG written with the certificate, when exported
LAST_VERDICT = "MedCert.lastVerdict"
VERDICT = "MedCert.verdict"
DIFFERING_VOXELS = "MedCert.differingVoxels"
INSTANCE_UIDS = "DICOM.instanceUIDs"  # set by Slicer's DICOM volume loading
SH_INSTANCE_UID = "DICOMInstanceUID"  # subject hierarchy item UIDs set by Slicer's DICOM plugins
SH_SERIES_UID = "DICOM"


def has_certificate(node) -> bool:
    """Whether ``node`` carries an attached certificate (not whether it is valid)."""
    return node is not None and bool(node.GetAttribute(CERTIFICATE))


def from_dicom(node) -> bool:
    """Whether ``node`` was loaded from DICOM (instance or series UIDs known); its files may still be missing."""
    uids, series = dicom_uids(node)
    return bool(uids or series)


def dicom_uids(node) -> tuple[list[str], str]:
    """SOP Instance UIDs and Series Instance UID of a node loaded from DICOM (empty when not).

    Instances from ``DICOM.instanceUIDs``, else from the node's subject hierarchy item (``DICOMInstanceUID``,
    set by Slicer's DICOM plugins); the series from the item's ``DICOM`` UID.
    """
    if node is None:
        return [], ""
    uids = (node.GetAttribute(INSTANCE_UIDS) or "").split()
    scene = node.GetScene()
    if scene is None:
        return uids, ""
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = sh.GetItemByDataNode(node) if sh is not None else 0
    if not item:
        return uids, ""
    uids = uids or sh.GetItemUID(item, SH_INSTANCE_UID).split()
    return uids, sh.GetItemUID(item, SH_SERIES_UID) or ""
