"""MedCertVerify's library: replay verification of a scene's certificate, usable without the GUI.

Builds on MedCertSegmentLib (node ↔ Volume, attached certificates) and ``medcert.verify``; never imports ``qt``.
``parameters`` is Slicer-only.
"""
