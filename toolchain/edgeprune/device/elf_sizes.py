"""Flash and SRAM use of a firmware ELF (or the arm64 runner), read with pyelftools.

Classified by section flags, so no linker script is needed: every allocated section with contents
(code, constants, .data's initial values) is stored in flash; every allocated writable section
(.data, .bss) occupies SRAM. The reservations of the board linker scripts (.heap, .stack) are
reported on their own: they are room set aside, not use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from edgeprune.errors import EdgepruneError

SHF_WRITE, SHF_ALLOC = 0x1, 0x2
RESERVED = {".heap": "heap_bytes", ".stack": "stack_region_bytes"}


@dataclass(frozen=True)
class ElfSizes:
    flash_bytes: int  # code + constants + initial values of .data
    sram_bytes: int  # .data + .bss (the model's arena included)
    text_bytes: int  # executable code
    rodata_bytes: int  # read-only data that is not code (weights live here)
    data_bytes: int
    bss_bytes: int
    heap_bytes: int = 0  # reserved by the linker script
    stack_region_bytes: int = 0  # reserved by the linker script

    def to_dict(self) -> dict:
        return asdict(self)


def elf_sizes(path: str | Path) -> ElfSizes:
    """Sizes of the allocated sections of an ELF, by what they occupy."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    path = Path(path)
    try:
        with open(path, "rb") as f:
            sections = [(s.name, s["sh_type"], s["sh_flags"], s["sh_size"]) for s in ELFFile(f).iter_sections()]
    except FileNotFoundError:
        raise EdgepruneError(f"{path} does not exist") from None
    except ELFError as e:
        raise EdgepruneError(f"{path} is not an ELF file ({e})") from None
    return sizes_from_sections(sections)


def sizes_from_sections(sections) -> ElfSizes:
    """`sections`: (name, sh_type, sh_flags, sh_size) tuples; split out so the rules are testable."""
    text = rodata = data = bss = 0
    reserved = {v: 0 for v in RESERVED.values()}
    for name, kind, flags, size in sections:
        if not flags & SHF_ALLOC:
            continue
        if name in RESERVED:
            reserved[RESERVED[name]] += size
        elif kind == "SHT_NOBITS":
            if flags & SHF_WRITE:  # .bss, .tbss
                bss += size
        elif flags & SHF_WRITE:
            data += size
        elif flags & 0x4:  # SHF_EXECINSTR
            text += size
        else:
            rodata += size
    return ElfSizes(flash_bytes=text + rodata + data, sram_bytes=data + bss, text_bytes=text, rodata_bytes=rodata,
                    data_bytes=data, bss_bytes=bss, **reserved)
