"""MedCertSegment's library: everything the module does, usable without the GUI.

Modules here import ``slicer`` (MRML, available in Slicer and in the ``slicer-core`` wheel) and ``medcert``,
never ``qt``, so they run in pytest on a headless scene. ``parameters`` and ``dependencies`` are Slicer-only.
"""
