"""Real Cortex-M boards: program the firmware with pyOCD, then speak PROTOCOL.md over the board's
virtual COM port (the debug probe's USB serial, e.g. the ST-LINK VCP of a 32F746G-DISCO).

pyocd and pyserial are optional (`pip install 'edgeprune[boards]'`) and imported only here, only
when a board is used, so nothing else needs them.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgeprune.device import protocol as P
from edgeprune.errors import EdgepruneError

INSTALL_HINT = "pyOCD is not installed: pip install 'edgeprune[boards]'"
NO_BOARD = "no board found: connect a board with a CMSIS-DAP or ST-LINK probe over USB, or use --device qemu"


def _import_pyocd():
    try:
        from pyocd.core.helpers import ConnectHelper
        from pyocd.flash.file_programmer import FileProgrammer
    except ImportError:
        raise EdgepruneError(INSTALL_HINT) from None
    try:
        import serial  # noqa: F401  (pyserial)
        import serial.tools.list_ports  # noqa: F401
    except ImportError:
        raise EdgepruneError("pyserial is not installed: pip install 'edgeprune[boards]'") from None
    return ConnectHelper, FileProgrammer


class PyocdLink:
    """Programs `elf` into the board with probe `uid` (or the only one connected), then talks to it.

    Same methods as the QEMU links (info, infer, bench, regions, close, context manager);
    regions() is empty: a board has a cycle counter (DWT) instead of instruction counts.
    """

    def __init__(self, elf: str | Path, uid: str | None = None, baudrate: int = 115200, target: str | None = None,
                 port: str | None = None, program: bool = True, timeout: float = 10.0):
        ConnectHelper, FileProgrammer = _import_pyocd()
        import serial
        from serial.tools import list_ports

        self.timeout = timeout
        self._decoder, self._output_size, self.serial = P.FrameDecoder(max_payload=P.HOST_MAX_PAYLOAD), None, None
        options = {"target_override": target} if target else {}
        session = ConnectHelper.session_with_chosen_probe(unique_id=uid, blocking=False, return_first=True, **options)
        if session is None:
            raise EdgepruneError(NO_BOARD if uid is None else f"no board with probe id {uid} found: check `pyocd list`, or use --device qemu")
        try:
            session.open()
            self.uid = session.probe.unique_id
            if program:
                FileProgrammer(session).program(str(elf), file_format="elf")
            session.target.reset()
        except Exception as e:
            raise EdgepruneError(f"pyOCD could not program {Path(elf).name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        finally:
            session.close()
        if port is None:
            ports = [p.device for p in list_ports.comports() if p.serial_number and p.serial_number.lower() == self.uid.lower()]
            if not ports:
                raise EdgepruneError(f"board {self.uid} has no virtual COM port; pass its serial port explicitly")
            port = ports[0]
        self.serial = serial.Serial(port, baudrate=baudrate, timeout=0.2)
        time.sleep(0.1)  # the firmware's start-up after the reset
        self.serial.reset_input_buffer()

    # -- framing (protocol.py) ---------------------------------------------------------------------
    def request(self, kind: int, payload: bytes = b"", timeout: float | None = None) -> bytes:
        self.serial.write(P.encode_frame(kind, payload))
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            for frame in self._decoder.feed(self.serial.read(max(1, self.serial.in_waiting))):
                frame.raise_for_error()
                if frame.kind != kind | P.RESPONSE_BIT:
                    raise EdgepruneError(f"the board answered kind {frame.kind:#x} to {kind:#x}")
                return frame.payload
        raise EdgepruneError("the board stopped answering (timeout); reset it or reflash with `edgeprune flash`")

    # -- commands --------------------------------------------------------------------------------
    def info(self) -> dict[str, str]:
        info = P.parse_info(self.request(P.CMD_INFO))
        self._output_size = int(info.get("output_bytes", 0))
        return info

    def infer(self, x: bytes) -> tuple[bytes, int | None]:
        if self._output_size is None:
            self.info()
        return P.parse_infer(self.request(P.CMD_INFER, bytes(x)), self._output_size)

    def bench(self, x: bytes) -> tuple[list[int] | None, int]:
        return P.parse_bench(self.request(P.CMD_BENCH, bytes(x)))

    def regions(self) -> list[int]:
        return []

    def close(self) -> None:
        if getattr(self, "serial", None) is not None:
            self.serial.close()  # the board keeps running its firmware: flash is persistent
            self.serial = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
