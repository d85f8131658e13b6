"""Build hook for the one C extension (metadata lives in pyproject.toml).

``cachelib._columnar`` reads large bar queries into column buffers. It links the shared
``libsqlite3.so.0`` that Python's own ``_sqlite3`` uses, so the process keeps a single copy of
SQLite. The build is optional: without a compiler, cachelib uses its pure-Python read path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cachelib._columnar",
            sources=["cachelib/_columnar.c"],
            extra_compile_args=["-O2"],
            extra_link_args=["-l:libsqlite3.so.0"],
            optional=True,
        )
    ]
)
