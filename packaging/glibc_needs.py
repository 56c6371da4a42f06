"""The glibc and libstdc++ symbol versions that the programs and libraries in a folder need.

    python packaging/glibc_needs.py FOLDER [--baseline 2.35]

Reads each ELF file's version needs (`readelf -V`): a system whose glibc is older than the
highest GLIBC_x.y there cannot start the bundle. Prints the highest versions and the files
that need them; exits 1 when a file needs a glibc newer than the baseline.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

VERSION_NEED = re.compile(r"Name: (GLIBC|GLIBCXX|CXXABI)_([0-9][0-9.]*)\s")


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def is_elf(path: Path) -> bool:
    if not path.is_file() or path.is_symlink():
        return False
    with path.open("rb") as file:
        return file.read(4) == b"\x7fELF"


def version_needs(path: Path) -> set[tuple[str, str]]:
    """(library family, version) pairs that one ELF file requires, e.g. ("GLIBC", "2.34")."""
    result = subprocess.run(
        ["readelf", "-V", "-W", str(path)], capture_output=True, text=True, check=False
    )
    needs_section = result.stdout.partition("Version needs section")[2]
    return set(VERSION_NEED.findall(needs_section))


def highest_needs(folder: Path) -> dict[str, tuple[str, list[Path]]]:
    """For each family, the highest version needed and the files that need it."""
    needed: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.rglob("*")):
        if is_elf(path):
            for family, version in version_needs(path):
                needed[family][version].append(path.relative_to(folder))
    highest = {}
    for family, versions in needed.items():
        top = max(versions, key=parse_version)
        highest[family] = (top, versions[top])
    return highest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--baseline", default="2.35", help="the oldest glibc to support")
    args = parser.parse_args(argv)
    highest = highest_needs(args.folder)
    if "GLIBC" not in highest:
        print(
            f"glibc_needs: no ELF file under {args.folder} names a glibc version", file=sys.stderr
        )
        return 1
    for family, (version, files) in sorted(highest.items()):
        shown = ", ".join(str(path) for path in files[:4])
        more = f" and {len(files) - 4} more" if len(files) > 4 else ""
        print(f"{family}_{version}: {shown}{more}")
    glibc = highest["GLIBC"][0]
    if parse_version(glibc) > parse_version(args.baseline):
        print(
            f"glibc_needs: the bundle needs glibc {glibc}, newer than the baseline "
            f"{args.baseline}: leave the files above out of the bundle (the system has them) "
            "or build on an older system.",
            file=sys.stderr,
        )
        return 1
    print(f"glibc {glibc} needed: within the baseline {args.baseline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
