"""What the bundle leaves out of PyInstaller's analysis (livecap.spec filters through keep).

The analysis collects everything a package ships, and the build host's shared libraries
that those link. Left out:
- what the app never loads (LEFT_OUT_FOLDERS, LEFT_OUT_NAMES, LEFT_OUT_SUFFIXES): torch's
  C++ test programs, test libraries and tools (torch/test, torch/bin: TCPStoreTest,
  protoc...), headers, static libraries and CMake files for building extensions, type
  stubs, and the README's screenshots; but torch/bin/torch_shm_manager stays, as
  `import torch` fails without it (KEPT);
- libraries that must come from the system where the bundle runs (FROM_SYSTEM):
  - glibc's own (libmvec): it must match the system's libc;
  - PortAudio with ALSA and JACK: ALSA loads the system's own plugins (PulseAudio,
    PipeWire) from a folder only the system's build knows, and the JACK client library must
    match the system's JACK or PipeWire server; distributions ship PortAudio linked to both
    (Debian, Ubuntu: libportaudio2; Fedora: portaudio), and without it `livecap devices`
    says what to install;
  - libstdc++, libgcc_s and libexpat: the build host's copies need its newer glibc (Debian
    12's need 2.36), while every desktop has its own (Qt and fontconfig link them), new
    enough for the wheels' manylinux builds;
  - the GTK 3 stack that Qt's GTK theme plugin links (cairo, pango, harfbuzz...): GTK 3
    itself is the desktop's own, and a mix of the host's copies with the system's GTK would
    put two builds of one library in the process; without GTK 3, Qt uses its own style.
"""

from __future__ import annotations

LEFT_OUT_FOLDERS = (
    "torch/test/",
    "torch/bin/",
    "torch/include/",
    "torch/share/",
    "resources/screenshots/",
)
KEPT = ("torch/bin/torch_shm_manager",)
LEFT_OUT_NAMES = ("libtorchbind_test.so", "libjitbackend_test.so", "libbackend_with_compiler.so")
LEFT_OUT_SUFFIXES = (".a", ".h", ".hpp", ".cuh", ".cmake", ".pyi", ".lib")
FROM_SYSTEM = (
    "libmvec.so",
    "libportaudio.so",
    "libasound.so",
    "libjack.so",
    "libstdc++.so",
    "libgcc_s.so",
    "libexpat.so",
    "libgtk-3.so",
    "libgdk-3.so",
    "libgdk_pixbuf-2.0.so",
    "libatk-1.0.so",
    "libcairo.so",
    "libcairo-gobject.so",
    "libpango-1.0.so",
    "libpangocairo-1.0.so",
    "libpangoft2-1.0.so",
    "libharfbuzz.so",
    "libthai.so",
    "libdatrie.so",
    "libfribidi.so",
    "libgraphite2.so",
    "libpixman-1.so",
    "libjpeg.so",
    "libXext.so",
    "libXrender.so",
)


def keep(dest: str) -> bool:
    """Whether a file bound for `dest` (its path inside the bundle) goes into the bundle."""
    dest = dest.replace("\\", "/")
    name = dest.rsplit("/", 1)[-1]
    if dest in KEPT:
        return True
    if dest.startswith(LEFT_OUT_FOLDERS) or dest.endswith(LEFT_OUT_SUFFIXES):
        return False
    return name not in LEFT_OUT_NAMES and not name.startswith(FROM_SYSTEM)
