"""Render the extension screenshot: a certified MedCert segmentation over a synthetic chest CT.

Runs the real MedCertSegment and MedCertVerify logic on a headless MRML scene (slicer-core), then renders
offscreen with VTK (EGL / Mesa llvmpipe): an axial slice with the segments over the CT, the segments' 3-D
surfaces, and the certificate summary with the verification verdict.

    .venv/bin/python scripts/screenshot.py                       # docs/images/medcert-segmentation.png
    .venv/bin/python scripts/screenshot.py --out /tmp/shot.png --small

Uses the bundled demo model when present (Resources/Models/), else the untrained placeholder weights, and
says which in the picture.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "Testing"))  # the headless scene helper the tests use
from slicer_scene import HeadlessSlicer  # noqa: E402  (it also puts the module folders on sys.path)

WINDOW = (-1000.0, 400.0)  # HU shown from black to white (lung window)
SIZE = (1400, 700)


def certified_scene(work: Path, small: bool):
    """Headless scene with a phantom CT, its certified segmentation and a verification: (app, volume, seg, ok)."""
    from medcert.keys import generate_keypair
    from medcert.models.placeholder import write_placeholder_weights
    from medcert.phantom.generator import generate_chest_ct
    from medcert.weights import default_weights_path
    from MedCertSegmentLib.logic import SegmentLogic
    from MedCertVerifyLib.logic import VerifyLogic

    app = HeadlessSlicer(work / "cache")
    if small:  # a tiny synthetic chest: one model tile, seconds on one CPU core
        from MedCertSegmentLib.selftest import synthetic_chest

        voxels, ijk_to_ras = synthetic_chest()
    else:
        phantom = generate_chest_ct(1, orientation="canonical", spacing_xy=3.0, thickness=4.0)
        voxels, ijk_to_ras = phantom.volume.voxels, phantom.volume.ijk_to_ras
    volume = app.add_volume(voxels, ijk_to_ras, "Chest CT (synthetic)")
    weights = default_weights_path() or write_placeholder_weights(work / "placeholder.safetensors")
    private, public = generate_keypair(work / "keys")
    audit_db = work / "audit.sqlite"
    seg = SegmentLogic(app.scene).segment(volume, private, weights_path=weights, output_folder=work / "out",
                                          audit_db=audit_db)
    verified = VerifyLogic(app.scene).verify(volume, seg.segmentation, trusted_keys=[public], weights_path=weights,
                                             audit_db=audit_db)
    return app, volume, seg, verified


def labels_on_volume(app, seg_node, volume):
    from MedCertSegmentLib.certificate_node import read_certificate
    from MedCertSegmentLib.logic import label_names
    from MedCertSegmentLib.node_volume import volume_from_node
    from MedCertVerifyLib.stored_mask import labels_on_grid

    names = label_names(read_certificate(seg_node))
    return labels_on_grid(app.scene, seg_node, volume_from_node(volume), names), names


def slice_rgb(voxels: np.ndarray, labels: np.ndarray, colors: dict[int, tuple], k: int) -> np.ndarray:
    """Axial slice k as RGB (rows = screen y up, cols = screen x), segments blended over the CT."""
    lo, hi = WINDOW
    grey = np.clip((voxels[:, :, k].astype(np.float64) - lo) / (hi - lo), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    lab = labels[:, :, k]
    for value, color in colors.items():
        mask = lab == value
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * np.asarray(color)
    return (rgb * 255).astype(np.uint8)


def image_actor(rgb_ij: np.ndarray, ijk_to_ras: np.ndarray):
    """A 2-D actor showing an [i, j] RGB slice in radiological view (patient right on screen left)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkRenderingCore import vtkImageActor

    img = rgb_ij
    if ijk_to_ras[0, 0] > 0:  # i runs toward patient right: flip so screen x runs toward patient left
        img = img[::-1]
    if ijk_to_ras[1, 1] < 0:  # j runs posterior: flip so screen y runs anterior
        img = img[:, ::-1]
    spacing = np.linalg.norm(ijk_to_ras[:3, :2], axis=0)
    data = vtkImageData()
    data.SetDimensions(img.shape[0], img.shape[1], 1)
    data.SetSpacing(float(spacing[0]), float(spacing[1]), 1.0)
    flat = np.ascontiguousarray(np.transpose(img, (1, 0, 2))).reshape(-1, 3)  # x fastest
    data.GetPointData().SetScalars(numpy_to_vtk(flat, deep=True))
    actor = vtkImageActor()
    actor.GetMapper().SetInputData(data)
    return actor


def surface_actors(seg_node):
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper

    seg_node.CreateClosedSurfaceRepresentation()
    segmentation = seg_node.GetSegmentation()
    actors = []
    for n in range(segmentation.GetNumberOfSegments()):
        sid = segmentation.GetNthSegmentID(n)
        poly = vtkPolyData()
        seg_node.GetClosedSurfaceRepresentation(sid, poly)
        if poly.GetNumberOfPoints() == 0:
            continue
        mapper = vtkPolyDataMapper()
        mapper.SetInputData(poly)
        mapper.ScalarVisibilityOff()
        actor = vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*segmentation.GetNthSegment(n).GetColor())
        actor.GetProperty().SetOpacity(0.35 if "lung" in segmentation.GetNthSegment(n).GetName() and
                                       "nodule" not in segmentation.GetNthSegment(n).GetName() else 1.0)
        actors.append(actor)
    return actors


def text_actor(text: str, x: int, y: int, size: int, bold: bool = False, color=(1, 1, 1)):
    from vtkmodules.vtkRenderingCore import vtkTextActor

    actor = vtkTextActor()
    actor.SetInput(text)
    actor.GetPositionCoordinate().SetCoordinateSystemToViewport()  # pixels from the viewport's corner
    actor.GetPositionCoordinate().SetValue(x, y)
    prop = actor.GetTextProperty()
    prop.SetFontSize(size)
    prop.SetBold(bold)
    prop.SetColor(*color)
    prop.SetFontFamilyToArial()
    return actor


def render(app, volume, seg, verified, out: Path) -> Path:
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL backend)
    from MedCertSegmentLib.node_volume import node_ijk_to_ras, node_voxels
    from vtkmodules.vtkIOImage import vtkPNGWriter
    from vtkmodules.vtkRenderingCore import vtkRenderer, vtkRenderWindow, vtkWindowToImageFilter

    voxels, m = node_voxels(volume), node_ijk_to_ras(volume)
    labels, names = labels_on_volume(app, seg.segmentation, volume)
    segmentation = seg.segmentation.GetSegmentation()
    colors = {v: segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(n)).GetColor()
              for v, n in names.items()}
    nodule = [v for v, n in names.items() if "nodule" in n]
    per_slice = (labels == nodule[0]).sum(axis=(0, 1)) if nodule else np.zeros(labels.shape[2])
    k = int(np.argmax(per_slice)) if per_slice.max() > 0 else labels.shape[2] // 2  # a nodule, else mid-chest

    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*SIZE)
    left, right = vtkRenderer(), vtkRenderer()
    left.SetViewport(0.0, 0.0, 0.5, 1.0)
    right.SetViewport(0.5, 0.0, 1.0, 1.0)
    for r in (left, right):
        r.SetBackground(0.08, 0.09, 0.11)
        window.AddRenderer(r)
    left.AddActor(image_actor(slice_rgb(voxels, labels, colors, k), m))
    left.ResetCamera()
    left.GetActiveCamera().ParallelProjectionOn()
    left.ResetCamera()
    left.GetActiveCamera().Zoom(1.25)
    for actor in surface_actors(seg.segmentation):
        right.AddActor(actor)
    right.ResetCamera()
    camera = right.GetActiveCamera()
    camera.SetViewUp(0, 0, 1)
    center = np.array(camera.GetFocalPoint())
    camera.SetPosition(*(center + np.array([0.0, 1.0, 0.25]) * camera.GetDistance() * 1.0))
    right.ResetCamera()
    camera.Zoom(1.3)

    s = seg.summary
    if "placeholder" in s["model"]:
        warning = "UNTRAINED placeholder model: the segmentation is meaningless (demo model not bundled yet)"
        right.AddActor(text_actor(warning, 20, SIZE[1] - 104, 14, color=(0.95, 0.75, 0.2)))
    verdict = verified.verdict
    verdict_color = {"PASS": (0.3, 0.85, 0.4), "FAIL": (0.95, 0.3, 0.3)}.get(verdict, (0.95, 0.75, 0.2))
    right.AddActor(text_actor("MedCert: certified segmentation", 20, SIZE[1] - 46, 24, bold=True))
    right.AddActor(text_actor(f"replay verification: {verdict}", 20, SIZE[1] - 78, 20, True, verdict_color))
    lines = [f"trace id   {s['trace_id']}", f"model      {s['model']}", f"signed by  key {s['key_id'][:16]}…",
             "segments   " + ", ".join(names[v] for v in sorted(names))]
    for n, line in enumerate(lines):
        right.AddActor(text_actor(line, 20, 20 + 22 * (len(lines) - 1 - n), 15, color=(0.85, 0.87, 0.9)))
    left.AddActor(text_actor(f"axial slice {k + 1}/{labels.shape[2]}  (patient right on the left)", 16, 16, 15,
                             color=(0.85, 0.87, 0.9)))
    window.Render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = vtkPNGWriter()
    writer.SetFileName(str(out))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    window.Finalize()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "medcert-segmentation.png")
    parser.add_argument("--small", action="store_true", help="a tiny synthetic volume (seconds; for tests)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MEDCERT_OPERATOR", "screenshot")
    with tempfile.TemporaryDirectory(prefix="medcert-screenshot-") as tmp:
        app, volume, seg, verified = certified_scene(Path(tmp), args.small)
        try:
            path = render(app, volume, seg, verified, args.out)
        finally:
            app.close()
    print(f"{path}  (verification {verified.verdict}, trace id {seg.trace_id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
