"""Names of the node attributes MedCert sets (no imports: cheap to use from the GUI before dependencies exist)."""

CERTIFICATE = "MedCert.certificate"  # JSON of the certificate record (core, evidence, annotations)
TRACE_ID = "MedCert.traceId"
KEY_ID = "MedCert.keyId"
SIDECAR = "MedCert.sidecar"
LAST_VERDICT = "MedCert.lastVerdict"
VERDICT = "MedCert.verdict"
DIFFERING_VOXELS = "MedCert.differingVoxels"
INSTANCE_UIDS = "DICOM.instanceUIDs"  # set by Slicer's DICOM volume loading


def has_certificate(node) -> bool:
    """Whether ``node`` carries an attached certificate (not whether it is valid)."""
    return node is not None and bool(node.GetAttribute(CERTIFICATE))
