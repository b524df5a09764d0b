"""The app icon, drawn with Qt and written as PNG, Windows .ico and macOS .icns.

The repository has no icon artwork, so the installers' icon is drawn here: a blue rounded
square with a white speech bubble and three dots. Only paths, no text, so the result does not
depend on which fonts the build machine has. The .ico and .icns containers are written by hand
(both are a small header plus images) so no platform tool (iconutil, icotool) is needed and the
same files come out on every build machine.

    python installer/icons.py OUT_DIR      writes tmac-chat.png (256 px), tmac-chat.ico, tmac-chat.icns
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PySide6.QtGui import QImage

ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
# .icns element types that hold PNG data, by pixel size (Apple's "ic07".."ic10", "icp4/5")
ICNS_TYPES = ((b"icp4", 16), (b"icp5", 32), (b"ic07", 128), (b"ic08", 256), (b"ic09", 512), (b"ic10", 1024))
BASENAME = "tmac-chat"


def draw(size: int) -> QImage:  # PySide6 imported inside: the module imports without Qt
    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QColor, QImage, QLinearGradient, QPainter, QPainterPath

    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    s = size / 64.0  # drawn on a 64-unit grid
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    gradient = QLinearGradient(QPointF(0, 0), QPointF(0, size))
    gradient.setColorAt(0.0, QColor("#3b82f6"))
    gradient.setColorAt(1.0, QColor("#1d4ed8"))
    background = QPainterPath()
    background.addRoundedRect(QRectF(2 * s, 2 * s, 60 * s, 60 * s), 14 * s, 14 * s)
    painter.fillPath(background, gradient)
    bubble = QPainterPath()
    bubble.addRoundedRect(QRectF(11 * s, 14 * s, 42 * s, 28 * s), 9 * s, 9 * s)
    tail = QPainterPath()
    tail.moveTo(20 * s, 40 * s)
    tail.lineTo(16 * s, 52 * s)
    tail.lineTo(31 * s, 40 * s)
    tail.closeSubpath()
    painter.fillPath(bubble.united(tail), QColor("white"))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor("#1d4ed8"))
    for x in (22, 32, 42):
        painter.drawEllipse(QPointF(x * s, 28 * s), 3.6 * s, 3.6 * s)
    painter.end()
    return image


def png_bytes(image: QImage) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):  # type: ignore[call-overload]  # the stubs say bytes; PySide6 wants str
        raise RuntimeError("Qt could not encode a PNG")
    buffer.close()
    return bytes(data.data())


def dib_bytes(image: QImage) -> bytes:
    """An .ico image entry in the classic BMP form (BITMAPINFOHEADER, BGRA rows bottom-up, AND
    mask): what every Windows version and NSIS read for the small sizes."""
    from PySide6.QtGui import QImage

    argb = image.convertToFormat(QImage.Format.Format_ARGB32)  # little-endian memory order: B, G, R, A
    size = argb.width()
    stride = size * 4
    raw = bytes(argb.constBits())[: stride * size]
    rows = b"".join(raw[y * stride : (y + 1) * stride] for y in reversed(range(size)))
    mask_stride = ((size + 31) // 32) * 4
    mask = bytes(mask_stride * size)  # all zero: the alpha channel decides transparency
    header = struct.pack("<IiiHHIIiiII", 40, size, size * 2, 1, 32, 0, len(rows) + len(mask), 0, 0, 0, 0)
    return header + rows + mask


def ico_bytes(images: dict[int, QImage]) -> bytes:
    entries = [(size, png_bytes(img) if size >= 256 else dib_bytes(img)) for size, img in sorted(images.items())]
    offset = 6 + 16 * len(entries)
    directory, blobs = b"", b""
    for size, blob in entries:
        dim = 0 if size >= 256 else size  # 0 means 256 in an ICONDIRENTRY
        directory += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(blob), offset + len(blobs))
        blobs += blob
    return struct.pack("<HHH", 0, 1, len(entries)) + directory + blobs


def icns_bytes(images: dict[int, QImage]) -> bytes:
    body = b""
    for kind, size in ICNS_TYPES:
        blob = png_bytes(images[size])
        body += kind + struct.pack(">I", 8 + len(blob)) + blob
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def write_icons(out_dir: Path) -> dict[str, Path]:
    from PySide6.QtGui import QGuiApplication

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display needed at build time
    _app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841 (QPainter needs one)
    images = {size: draw(size) for size in {*ICO_SIZES, *(size for _, size in ICNS_TYPES)}}
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "png": out_dir / f"{BASENAME}.png",
        "ico": out_dir / f"{BASENAME}.ico",
        "icns": out_dir / f"{BASENAME}.icns",
    }
    files["png"].write_bytes(png_bytes(images[256]))
    files["ico"].write_bytes(ico_bytes({size: images[size] for size in ICO_SIZES}))
    files["icns"].write_bytes(icns_bytes(images))
    return files


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for path in write_icons(Path(sys.argv[1])).values():
        print(path)
