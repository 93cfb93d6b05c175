"""AOTInductor: a network compiled ahead of time into a `.pt2` package that runs without Python
model code (from Python here, from C++ in the native runner)."""

from kdforge.export.aoti.package import REBUILD_HINT, AotiPackage, compile_package, package_metadata

__all__ = ["REBUILD_HINT", "AotiPackage", "compile_package", "package_metadata"]
