"""DICOM output and input: SEG with the certificate in a private block, SEG as verification carrier, and
synthetic CT series.

>>> ds = certified_segmentation(volume, record, labels, {1: "right lung", 2: "left lung", 3: "lung nodule"})
>>> write_dicom(out / f"{record.trace_id}.seg.dcm", ds)
>>> seg = read_seg(out / f"{record.trace_id}.seg.dcm")   # seg.certificate.record: the CertificateRecord
>>> mask = seg_stored_mask(seg, volume)                   # labelmap on the series grid, for verify_record

Layout of the private block and what survives de-identification: docs/dicom.md.
"""

from medcert.dicomseg.ct_series import write_ct_series
from medcert.dicomseg.private_block import (
    CREATOR,
    GROUP,
    CarriedCertificate,
    attach_certificate,
    has_certificate_block,
    read_certificate,
    remove_certificate_block,
)
from medcert.dicomseg.reader import (
    SegFile,
    SegGridError,
    algorithm_parameters,
    is_dicom_file,
    read_seg,
    seg_labelmap,
    seg_stored_mask,
)
from medcert.dicomseg.terms import check_labels
from medcert.dicomseg.writer import (
    Algorithm,
    build_segmentation,
    certified_segmentation,
    dicom_bytes,
    write_dicom,
)

__all__ = [
    "CREATOR",
    "GROUP",
    "Algorithm",
    "CarriedCertificate",
    "SegFile",
    "SegGridError",
    "algorithm_parameters",
    "attach_certificate",
    "build_segmentation",
    "certified_segmentation",
    "check_labels",
    "dicom_bytes",
    "has_certificate_block",
    "is_dicom_file",
    "read_certificate",
    "read_seg",
    "remove_certificate_block",
    "seg_labelmap",
    "seg_stored_mask",
    "write_ct_series",
    "write_dicom",
]
