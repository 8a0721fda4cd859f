"""Reading user images safely: one clear error naming the file, and every pixel format made RGB."""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
# Decompression-bomb guard: 64 MP is far above any image this tool needs and well below a bomb.
MAX_IMAGE_PIXELS = 64_000_000


def load_rgb(path: Path) -> Image.Image:
    """Open any common image as 8-bit RGB. Grayscale, RGBA, palette and 16-bit inputs are converted.

    Alpha is dropped (the colour under it is kept), as torchvision's ImageFolder does.
    """
    path = Path(path)
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as image:
            # Pillow only raises above 2x its limit (it merely warns between 1x and 2x): check the
            # header's size ourselves, before any pixel is decoded.
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}x{image.height}")
            image.load()
            return _to_rgb8(image)
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except Image.DecompressionBombError:
        raise UserError(f"image {path} is larger than the {MAX_IMAGE_PIXELS:,}-pixel safety limit (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise UserError(f"{path} is not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {exc} (truncated or corrupt file?)") from None
    except Exception as exc:  # decoders raise many types on hostile bytes; all mean "corrupt file"
        raise UserError(f"cannot read image {path}: {type(exc).__name__} (corrupt file?)") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def _to_rgb8(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit integer grayscale: scale the range to 8 bits instead of clipping at 255
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        gray = np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        top = 1.0 if pixels.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Every image file under folder, recursively, in a stable (sorted) order."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p))
