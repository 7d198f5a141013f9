"""Shared foundations: configs and the method registry, errors, data adapter, module
walking, device selection, the transform record, specs and safe I/O."""
