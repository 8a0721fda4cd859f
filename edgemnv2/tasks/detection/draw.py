"""Annotated images: boxes with labels and scores; side-by-side comparisons that mark disagreement."""

from PIL import Image, ImageDraw, ImageFont

from .matching import match_detections

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60)]
DISAGREE = (255, 0, 255)
MIN_SIDE = 384  # small demo images are enlarged so labels stay readable


def _font():
    return ImageFont.load_default()


def _enlarge(image: Image.Image) -> tuple[Image.Image, float]:
    factor = max(1.0, MIN_SIDE / min(image.size))
    if factor == 1.0:
        return image.copy(), 1.0
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.NEAREST), factor


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box, colour, width: int = 3, dash: int = 6) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay, bx, by) in ((x1, y1, x2, y1), (x2, y1, x2, y2), (x2, y2, x1, y2), (x1, y2, x1, y1)):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for s in range(0, steps, 2):
            t0, t1 = s / steps, min(1.0, (s + 1) / steps)
            draw.line((ax + (bx - ax) * t0, ay + (by - ay) * t0, ax + (bx - ax) * t1, ay + (by - ay) * t1), fill=colour, width=width)


def draw_detections(image: Image.Image, detections, class_names, caption: str = "", unmatched: set[int] = frozenset()) -> Image.Image:
    """Boxes in original-image pixels. Detections whose index is in `unmatched` (found only by this
    model) are drawn dashed in magenta and tagged, so disagreement is visible at a glance."""
    canvas, factor = _enlarge(image.convert("RGB"))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for i, (box, score, label) in enumerate(detections):
        scaled = [float(v) * factor for v in box]
        text = f"{class_names[label]} {score:.2f}"
        if i in unmatched:
            _dashed_rectangle(draw, scaled, DISAGREE)
            text += " (only here)"
            colour = DISAGREE
        else:
            colour = PALETTE[label % len(PALETTE)]
            draw.rectangle(scaled, outline=colour, width=2)
        tx, ty = scaled[0], max(0.0, scaled[1] - 11)
        draw.rectangle(draw.textbbox((tx, ty), text, font=font), fill=(0, 0, 0))
        draw.text((tx, ty), text, fill=colour, font=font)
    if caption:
        draw.rectangle(draw.textbbox((4, 4), caption, font=font), fill=(0, 0, 0))
        draw.text((4, 4), caption, fill=(255, 255, 255), font=font)
    return canvas


def side_by_side(image: Image.Image, left, right, class_names, left_caption: str, right_caption: str) -> tuple[Image.Image, int]:
    """fp32 on the left, the other model on the right. -> (image, number of disagreements)."""
    _, only_left, only_right = match_detections(left, right)
    a = draw_detections(image, left, class_names, f"{left_caption}: {len(left)} boxes, {len(only_left)} not in the other", set(only_left))
    b = draw_detections(image, right, class_names, f"{right_caption}: {len(right)} boxes, {len(only_right)} not in the other", set(only_right))
    gap = 8
    combined = Image.new("RGB", (a.width + b.width + gap, max(a.height, b.height)), (255, 255, 255))
    combined.paste(a, (0, 0))
    combined.paste(b, (a.width + gap, 0))
    return combined, len(only_left) + len(only_right)
