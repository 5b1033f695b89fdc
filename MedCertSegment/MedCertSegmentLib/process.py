"""Long MedCert work in a child process (``PythonSlicer -m medcert.cli.main …``), polled without blocking.

torch never loads into Slicer's GUI process: the widget starts a ``MedCertProcess``, calls ``poll()`` from a
``qt.QTimer`` (new progress stages come back), and ``cancel()`` kills the child. Pure Python, so the same
code runs under pytest.

>>> job = start_segment_process(logic, volume_node, key, weights_path=w, output_folder=out)
>>> while job.running: stages = job.poll(); time.sleep(0.2)
>>> result = job.finish()          # SegmentResult, nodes added to the scene
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medcert.errors import MedCertError
from medcert.io import write_scalar_nrrd
from medcert.uids import safe_stem

from MedCertSegmentLib.node_volume import dicom_series_uid, link_files, own_folder, source_files, volume_from_node

STAGE_LINE = re.compile(r"^\[medcert\s+[0-9.]+s\]\s+(?P<stage>.+?)\s*$")
ERROR_LINE = re.compile(r"^medcert: (?:internal )?error: (?P<message>.+)$")


def python_executable() -> str:
    """Slicer's ``PythonSlicer`` when present (it sets up Slicer's Python environment), else this Python."""
    return shutil.which("PythonSlicer") or sys.executable


def child_environment(extra_paths: Sequence[Path] = ()) -> dict[str, str]:
    """This environment, with the folders holding ``medcert`` (and ``extra_paths``) first on PYTHONPATH.

    Inside Slicer the extension's packages are importable only in Slicer's own process; the child needs the
    folders spelled out (this sets the child's environment, never this process's ``sys.path``).
    """
    import medcert

    env = dict(os.environ)
    roots = [str(Path(medcert.__file__).resolve().parent.parent), *map(str, extra_paths)]
    old = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join(list(dict.fromkeys(roots)) + old)
    return env


class MedCertProcess:
    """One child run of ``python -m <module> <args>`` (default: the ``medcert`` CLI): stages from stderr,
    the JSON summary from stdout, cancel by kill. ``cleanup`` is a work folder removed when it ends."""

    def __init__(self, args: Sequence[str], *, module: str = "medcert.cli.main",
                 paths: Sequence[Path] = (), on_finish: Callable[[dict[str, Any]], Any] | None = None,
                 cleanup: Path | None = None) -> None:
        self.args = [python_executable(), "-m", module, *map(str, args)]
        self.paths = list(paths)
        self.on_finish = on_finish
        self.cleanup = cleanup
        self.stages: list[str] = []
        self.cancelled = False
        self._lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        self._stdout = ""
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> MedCertProcess:
        self._proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      encoding="utf-8", errors="replace",
                                      env=child_environment(self.paths))
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        self._stdout = self._proc.stdout.read()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._lines.put(line.rstrip("\n"))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def poll(self) -> list[str]:
        """New progress stages since the last call (non-blocking)."""
        new = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return new
            self._stderr.append(line)
            m = STAGE_LINE.match(line)
            if m:
                self.stages.append(m.group("stage"))
                new.append(m.group("stage"))

    def cancel(self) -> None:
        """Kill the child; its partial outputs are never loaded."""
        self.cancelled = True
        if self.running:
            assert self._proc is not None
            self._proc.kill()
        self.wait()
        self._cleanup()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child and drain its output (stages stay available through ``stages``)."""
        assert self._proc is not None, "process not started"
        code = self._proc.wait(timeout)
        for t in self._threads:
            t.join()
        self.poll()
        return code

    def _cleanup(self) -> None:
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)

    def error_message(self) -> str:
        """The CLI's one-line error, else the last lines of its stderr."""
        for line in reversed(self._stderr):
            m = ERROR_LINE.match(line)
            if m:
                return m.group("message")
        return "\n".join(self._stderr[-5:]) or f"exit code {self.returncode}"

    def finish(self) -> Any:
        """Wait, then hand the JSON summary to ``on_finish``; MedCertError when the run failed or was cancelled.

        The work folder is removed afterwards, whatever happened.
        """
        try:
            code = self.wait()
            if self.cancelled:
                raise MedCertError("cancelled")
            if code != 0:
                raise MedCertError(self.error_message())
            try:
                summary = json.loads(self._stdout)
            except json.JSONDecodeError as exc:
                raise MedCertError(f"the child process printed no JSON summary: {exc}") from None
            return self.on_finish(summary) if self.on_finish else summary
        finally:
            self._cleanup()


def segment_input(volume_node, lookup, work: Path) -> tuple[Path, str | None]:
    """A path the CLI can load: the original DICOM series folder (with its series UID) or a NRRD of the node."""
    files = source_files(volume_node, lookup) if lookup is not None else None
    if files:
        paths = list(files.values())
        return own_folder(paths) or link_files(paths, work / "dicom"), dicom_series_uid(paths[0])
    vol = volume_from_node(volume_node)
    return write_scalar_nrrd(work / f"{safe_stem(volume_node.GetName() or 'volume')}.nrrd", vol.voxels,
                             vol.ijk_to_ras), None


def start_segment_process(logic, volume_node, key_path: str | Path, *, weights_path: str | Path | None = None,
                          output_folder: str | Path | None = None, device: str = "cpu",
                          threads: int | None = None, dicom_seg: bool = False) -> MedCertProcess:
    """Start ``medcert segment --json`` on the node; ``finish()`` loads the outputs with ``logic.load_outputs``.

    ``dicom_seg`` adds ``--dicom-seg``; a node not from DICOM is refused here, before anything starts.
    """
    if dicom_seg:
        logic.check_dicom_seg(volume_node)
    work = Path(tempfile.mkdtemp(prefix="medcert-run-"))
    try:
        path, series = segment_input(volume_node, logic.lookup, work)
        folder = Path(output_folder) if output_folder else logic.default_output_folder(volume_node)
        args = ["segment", path, "--key", key_path, "--out", folder, "--device", device, "--json"]
        for flag, value in (("--weights", weights_path), ("--series", series), ("--threads", threads)):
            if value:
                args += [flag, value]
        if dicom_seg:
            args.append("--dicom-seg")
        job = MedCertProcess(args, on_finish=lambda s: logic.load_outputs(volume_node, s), cleanup=work)
        return job.start()
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
        raise
