"""Wheel build: configures the repository with CMake (Python binding only), builds
the SWIG module and libstarkv, and installs CMake's `python` component (the package,
_capi with rpath $ORIGIN, libstarkv.so.N beside it) into the wheel.

    python3 -m pip wheel . --no-deps --no-build-isolation
"""
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = pathlib.Path(__file__).resolve().parent
# The repository: this file's grandparent, or STARKV_SOURCE_DIR (for a copied folder).
ROOT = pathlib.Path(os.environ.get("STARKV_SOURCE_DIR", HERE.parents[1])).resolve()


class CMakeExtension(Extension):
    def __init__(self) -> None:
        super().__init__("starkv._capi", sources=[])


class CMakeBuild(build_ext):
    def run(self) -> None:
        build = pathlib.Path(self.build_temp).resolve() / "cmake"
        stage = pathlib.Path(self.build_temp).resolve() / "stage"
        shutil.rmtree(stage, ignore_errors=True)
        args = [
            "cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython3_EXECUTABLE={sys.executable}", "-DSTARKV_BUILD_PYTHON=ON", "-DSTARKV_BUILD_JAVA=OFF",
            "-DSTARKV_BUILD_TESTS=OFF", "-DSTARKV_BUILD_BENCH=OFF",
        ] + shlex.split(os.environ.get("STARKV_CMAKE_ARGS", ""))
        subprocess.check_call(args)
        jobs = str(os.cpu_count() or 2)
        subprocess.check_call(["cmake", "--build", str(build), "-j", jobs, "--target", "starkv_python"])
        subprocess.check_call(["cmake", "--install", str(build), "--component", "python", "--prefix", str(stage)])
        if not (stage / "starkv" / "capi.py").is_file():
            raise RuntimeError("CMake did not build the Python binding (SWIG, Python headers or NumPy missing?)")
        out = pathlib.Path(self.build_lib) / "starkv"
        out.mkdir(parents=True, exist_ok=True)
        for f in (stage / "starkv").iterdir():
            shutil.copy2(f, out / f.name)  # follows links: one real libstarkv.so.N


setup(ext_modules=[CMakeExtension()], cmdclass={"build_ext": CMakeBuild}, zip_safe=False)
