"""Build hook for quantir's Cython extensions.

Every `quantir/**/*.pyx` is compiled when a C compiler is available. A failed build
does not fail the install: the runtime then warns and uses its numpy reference kernels.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Compile the extensions if possible; never fail the install because of them."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - any compiler failure is tolerated
            print(f"warning: quantir Cython extensions not built ({error})")

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001
            print(f"warning: quantir extension {ext.name} not built ({error})")


def cython_extensions() -> list:
    sources = sorted(str(path) for path in Path("quantir").rglob("*.pyx"))
    if not sources:
        return []
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError:
        return []
    try:
        extensions = cythonize(
            sources,
            compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
            quiet=True,
        )
    except Exception as error:  # noqa: BLE001 - a Cython error must not fail the install
        print(f"warning: quantir Cython extensions not generated ({error})")
        return []
    for extension in extensions:
        extension.include_dirs += [numpy.get_include(), str(Path(extension.sources[0]).parent)]
    return extensions


setup(ext_modules=cython_extensions(), cmdclass={"build_ext": OptionalBuildExt})
