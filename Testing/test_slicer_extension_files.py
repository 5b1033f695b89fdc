"""The Slicer extension's files: every shipped file named in its CMakeLists.txt (and every named file present),
the extension metadata, the .ui files against the widget code and the parameter nodes, icons, requirements."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import re
import struct
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULES = ("MedCertSegment", "MedCertVerify")
SHIPPED = (".py", ".ui", ".png", ".svg", ".txt", ".json", ".safetensors")
MAX_MODULE_LINES = 300
# widget class -> parameter types it can show (slicer.parameterNodeWrapper's GUI connectors)
WIDGET_TYPES = {
    "qMRMLNodeComboBox": "node", "ctkPathLineEdit": "pathlib.Path", "ctkDirectoryButton": "pathlib.Path",
    "QCheckBox": "bool", "QLineEdit": "str", "QComboBox": "choice", "QSpinBox": "int", "QDoubleSpinBox": "float",
}


def cmake_text(folder: Path) -> str:
    text = (folder / "CMakeLists.txt").read_text()
    name = re.search(r"set\(MODULE_NAME\s+(\w+)\)", text)
    return text.replace("${MODULE_NAME}", name.group(1)) if name else text


def cmake_list(text: str, variable: str) -> list[str]:
    m = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    return m.group(1).split() if m else []


def shipped_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.suffix in SHIPPED and p.name != "CMakeLists.txt"
                  and "__pycache__" not in p.parts and p.parts[len(folder.parts)] != "Testing")


@pytest.mark.parametrize("module", MODULES)
def test_every_module_file_is_named_in_cmake_and_every_named_file_exists(module):
    folder = REPO / module
    text = cmake_text(folder)
    named = cmake_list(text, "MODULE_PYTHON_SCRIPTS") + cmake_list(text, "MODULE_PYTHON_RESOURCES")
    assert sorted(named) == shipped_files(folder)
    tests = re.findall(r"slicer_add_python_unittest\(SCRIPT\s+(\S+)\)", text)
    assert f"{module}.py" in tests
    on_disk = sorted(str(p.relative_to(folder)) for p in (folder / "Testing").rglob("*.py"))
    assert sorted(t for t in tests if t.startswith("Testing/")) == on_disk and on_disk
    assert "WITH_GENERIC_TESTS" in text and "if(BUILD_TESTING)" in text


def test_core_library_globs_cover_the_package_and_nothing_else():
    folder = REPO / "MedCertCore"
    text = (folder / "CMakeLists.txt").read_text()
    patterns = [p for block in re.findall(r"file\(GLOB_RECURSE\s+\w+(.*?)\)", text, re.S)
                for p in block.split() if p.startswith("medcert/")]
    files = [p.relative_to(folder) for p in (folder / "medcert").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]

    def globbed(rel: Path) -> bool:  # CMake GLOB_RECURSE: the directory prefix, then the name pattern
        return any(str(rel).startswith(p.rsplit("/", 1)[0] + "/") and fnmatch.fnmatch(rel.name, p.rsplit("/", 1)[1])
                   for p in patterns)

    assert files and [str(f) for f in files if not globbed(f)] == []
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" not in text
    assert not list(folder.glob("*.py")), "a .py at the top of the library folder would load as a module"


def test_top_level_cmake_declares_the_extension():
    text = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(MedCert\)", text, re.M)
    values = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert values.get(f"EXTENSION_{key}"), key
    assert values["EXTENSION_CATEGORY"] == "Segmentation" and values["EXTENSION_DEPENDS"] == "PyTorch"
    assert values["EXTENSION_ICONURL"].endswith("Resources/Icons/MedCert.png")
    assert values["EXTENSION_SCREENSHOTURLS"].endswith("docs/images/medcert-segmentation.png")
    assert re.findall(r"add_subdirectory\((\w+)\)", text) == ["MedCertCore", *MODULES]
    for line in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text


def test_extensions_index_entry():
    entry = json.loads((REPO / "MedCert.json").read_text())
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    assert "slicer-extension-catalog-entry-schema" in entry["$schema"]
    assert entry["category"] == "Segmentation" and entry["build_dependencies"] == ["PyTorch"]
    assert 1 <= entry["tier"] <= 5


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_icons_are_png_128():
    for path in (REPO / "Resources/Icons/MedCert.png", *(REPO / m / f"Resources/Icons/{m}.png" for m in MODULES)):
        assert png_size(path) == (128, 128), path


@pytest.mark.parametrize("module", MODULES)
def test_requirements_match_the_core_dependencies(module):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    core = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in pyproject} - {"torch", "numpy"}
    lib = REPO / "MedCertSegment/MedCertSegmentLib/dependencies.py"
    spec = importlib.util.spec_from_file_location("dependencies", lib)
    dependencies = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dependencies)
    names = dependencies.requirement_names(REPO / module / "Resources/requirements.txt")
    assert {n.lower() for n in names} == core


def parameter_fields(module: str) -> dict[str, str]:
    """Field name -> annotation source of the @parameterNodeWrapper class in <Module>Lib/parameters.py."""
    tree = ast.parse((REPO / module / f"{module}Lib/parameters.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef)
               and any(ast.unparse(d) == "parameterNodeWrapper" for d in n.decorator_list))
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def field_kind(annotation: str) -> str:
    if annotation.startswith("vtkMRML"):
        return "node"
    if "Choice(" in annotation:
        return "choice"
    return annotation


def ui_widgets(module: str) -> dict[str, tuple[str, str | None]]:
    """Widget name -> (class, SlicerParameterName or None) from Resources/UI/<Module>.ui."""
    root = ET.parse(REPO / module / f"Resources/UI/{module}.ui").getroot()
    out = {}
    for w in root.iter("widget"):
        prop = next((p for p in w.findall("property") if p.get("name") == "SlicerParameterName"), None)
        out[w.get("name")] = (w.get("class"), prop.findtext("string") if prop is not None else None)
    return out


@pytest.mark.parametrize("module", MODULES)
def test_ui_parameter_names_match_the_parameter_node(module):
    fields = parameter_fields(module)
    bound = {param: (name, cls) for name, (cls, param) in ui_widgets(module).items() if param}
    assert set(bound) == set(fields), "every parameter bound to exactly one widget, no unknown names"
    for param, (name, cls) in bound.items():
        assert WIDGET_TYPES.get(cls) == field_kind(fields[param]), f"{name} ({cls}) cannot show {fields[param]}"


@pytest.mark.parametrize("module", MODULES)
def test_widget_code_refers_only_to_widgets_the_ui_defines(module):
    source = (REPO / module / f"{module}.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    defined = set(ui_widgets(module))
    assert used and used <= defined, f"not in the .ui: {sorted(used - defined)}"
    root = ET.parse(REPO / module / f"Resources/UI/{module}.ui").getroot()
    for c in root.iter("connection"):
        assert c.findtext("receiver") in defined


@pytest.mark.parametrize("module", MODULES)
def test_module_file_follows_the_template(module):
    path = REPO / module / f"{module}.py"
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    tree = ast.parse(source)
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes[module] == ["ScriptedLoadableModule"]
    assert classes[f"{module}Widget"][0] == "ScriptedLoadableModuleWidget"
    assert classes[f"{module}Logic"] == ["ScriptedLoadableModuleLogic"]
    assert classes[f"{module}Test"] == ["ScriptedLoadableModuleTest"]
    for attribute in ("title", "categories", "contributors", "helpText", "acknowledgementText"):
        assert f"self.parent.{attribute} =" in source
    assert "slicer.util.loadUI" in source and "childWidgetVariables" in source and "connectGui" in source
    assert "tryWithErrorDisplay" in source and not uses_sys_path(tree)


def uses_sys_path(tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name)
               and n.value.id == "sys" for n in ast.walk(tree))


@pytest.mark.parametrize("module", MODULES)
def test_library_never_imports_qt(module):
    for path in (REPO / module / f"{module}Lib").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"qt", "ctk", "PythonQt"}, path
        assert not uses_sys_path(tree), path
