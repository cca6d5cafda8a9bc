"""ImageClassifier over real gRPC: the tiny quadrants model, and the committed digits_cnn when present."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from PIL import Image, ImageDraw

from service.client import ClientError, TaskClient
from tests.conftest import RunningServer
from tests.integration.tasks.conftest import serve_committed


def png(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def ink_box(box: tuple[int, int, int, int], size: tuple[int, int] = (200, 200)) -> bytes:
    """A dark box drawn on white paper."""
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).rectangle(box, fill=0)
    return png(image)


def test_dark_ink_on_paper_is_classified(client: TaskClient) -> None:
    result = client.classify([ink_box((120, 20, 180, 80))], model="quadrants")
    assert (result.model, result.version) == ("quadrants", "1")
    assert result.results[0][0].label == "top_right"
    assert result.results[0][0].probability > 0.9
    assert len(result.results[0]) == 4  # top_k 0: five labels, or every class when fewer


def test_default_model_is_the_one_whose_task_matches(client: TaskClient) -> None:
    assert client.classify([ink_box((20, 120, 80, 180))], top_k=1).model == "quadrants"


def test_several_images_keep_their_order_and_top_k(client: TaskClient) -> None:
    boxes = [(20, 20, 80, 80), (120, 120, 180, 180), (20, 120, 80, 180)]
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: the top-left box shows top-right
    rotated = png(Image.open(io.BytesIO(ink_box((20, 20, 80, 80)))).convert("RGB"), "JPEG", exif=exif)
    result = client.classify([ink_box(b) for b in boxes] + [rotated], top_k=2)
    assert [r[0].label for r in result.results] == ["top_left", "bottom_right", "bottom_left", "top_right"]
    assert all(len(r) == 2 for r in result.results)


def test_concurrent_requests_are_batched(task_server: RunningServer, client: TaskClient) -> None:
    stats = task_server.app.registry.get("quadrants").observer.stats
    before_runs, before_items = stats.execution_count, stats.inference_count
    image = ink_box((20, 20, 80, 80))
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: client.classify([image] * 4, top_k=1), range(16)))
    assert all(r.results[0][0].label == "top_left" for r in results)
    items, runs = stats.inference_count - before_items, stats.execution_count - before_runs
    assert items == 64 and runs < items


@pytest.mark.parametrize(
    ("images", "kwargs", "message"),
    [
        ([b"not an image"], {}, r"images\[0\] is not a PNG, JPEG, BMP, GIF or WebP file"),
        ([], {}, "the request has no images"),
        ([b""], {}, r"images\[0\] is empty"),
        (["ok", b"\x89PNG\r\n\x1a\n broken"], {}, r"images\[1\]"),
        (["ok"], {"top_k": 9}, "top_k must be between 1 and 4"),
        (["ok"], {"model": "tiny_sentiment"}, "serves the task sentiment, not image_classification"),
    ],
)
def test_bad_requests_are_invalid_argument(client: TaskClient, images: list, kwargs: dict, message: str) -> None:
    images = [ink_box((0, 0, 9, 9)) if i == "ok" else i for i in images]
    with pytest.raises(ClientError) as caught:
        client.classify(images, **kwargs)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(message, caught.value.message), caught.value.message


def test_oversized_image_is_refused_from_its_header(client: TaskClient) -> None:
    huge = png(Image.new("1", (5000, 4000), 1))
    with pytest.raises(ClientError, match="5000x4000 pixels, more than the") as caught:
        client.classify([huge])
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_model_is_not_found(client: TaskClient) -> None:
    with pytest.raises(ClientError, match="unknown model 'nope'") as caught:
        client.classify([ink_box((0, 0, 9, 9))], model="nope")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND


def test_metrics_count_requests_by_code(task_server: RunningServer, client: TaskClient) -> None:
    registry = task_server.app.metrics.registry
    labels = {"model": "quadrants", "version": "1", "api": "classify", "code": "OK"}
    before = registry.get_sample_value("deepserve_requests_total", labels) or 0
    client.classify([ink_box((0, 0, 9, 9))])
    assert registry.get_sample_value("deepserve_requests_total", labels) == before + 1


# ---- the committed digits model --------------------------------------------------------------------
STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [
        [
            (0.5, 0.12),
            (0.28, 0.22),
            (0.22, 0.5),
            (0.28, 0.78),
            (0.5, 0.88),
            (0.72, 0.78),
            (0.78, 0.5),
            (0.72, 0.22),
            (0.5, 0.12),
        ]
    ],
    1: [[(0.38, 0.28), (0.55, 0.12), (0.55, 0.88)]],
    2: [[(0.28, 0.3), (0.38, 0.15), (0.58, 0.12), (0.72, 0.25), (0.7, 0.42), (0.28, 0.86), (0.76, 0.86)]],
    3: [[(0.28, 0.16), (0.7, 0.16), (0.48, 0.45), (0.7, 0.58), (0.72, 0.76), (0.56, 0.88), (0.28, 0.84)]],
    4: [[(0.62, 0.88), (0.62, 0.12), (0.24, 0.62), (0.78, 0.62)]],
    5: [[(0.7, 0.14), (0.34, 0.14), (0.3, 0.46), (0.52, 0.4), (0.7, 0.52), (0.72, 0.72), (0.56, 0.87), (0.3, 0.82)]],
    6: [
        [
            (0.66, 0.14),
            (0.44, 0.28),
            (0.32, 0.5),
            (0.3, 0.72),
            (0.44, 0.87),
            (0.62, 0.85),
            (0.7, 0.68),
            (0.6, 0.52),
            (0.42, 0.5),
            (0.32, 0.6),
        ]
    ],
    7: [[(0.25, 0.15), (0.75, 0.15), (0.42, 0.88)]],
    8: [
        [
            (0.5, 0.12),
            (0.32, 0.22),
            (0.34, 0.38),
            (0.5, 0.48),
            (0.68, 0.6),
            (0.7, 0.78),
            (0.5, 0.88),
            (0.3, 0.78),
            (0.32, 0.6),
            (0.5, 0.48),
            (0.66, 0.38),
            (0.68, 0.22),
            (0.5, 0.12),
        ]
    ],
    9: [
        [
            (0.68, 0.36),
            (0.56, 0.5),
            (0.38, 0.48),
            (0.3, 0.32),
            (0.4, 0.14),
            (0.6, 0.14),
            (0.68, 0.3),
            (0.66, 0.6),
            (0.6, 0.88),
        ]
    ],
}


def drawing(digit: int, size: int = 200, page: tuple[int, int] | None = None) -> Image.Image:
    """A digit drawn as people write it: a dark pen on white paper, on a canvas bigger than the model's input."""
    width, height = page or (size, size)
    image = Image.new("L", (width, height), 250)
    draw = ImageDraw.Draw(image)
    left, top = (width - size) // 2, (height - size) // 2
    for stroke in STROKES[digit]:
        points = [(left + x * size, top + y * size) for x, y in stroke]
        draw.line(points, fill=20, width=max(2, size // 14), joint="curve")
    return image


def hand_drawn(digit: int, size: int = 200) -> bytes:
    return png(drawing(digit, size))


@pytest.fixture(scope="module")
def digits_server() -> Iterator[RunningServer]:
    yield from serve_committed("digits_cnn")


@pytest.mark.parametrize("digit", sorted(STROKES))
def test_hand_drawn_digit_is_classified(digits_server: RunningServer, digit: int) -> None:
    with TaskClient(digits_server.address) as client:
        result = client.classify([hand_drawn(digit)], top_k=3, model="digits_cnn")
    assert result.results[0][0].label == str(digit), result.results[0]


@pytest.mark.parametrize("size", [64, 300])
def test_hand_drawn_digits_of_other_sizes(digits_server: RunningServer, size: int) -> None:
    with TaskClient(digits_server.address) as client:
        result = client.classify([hand_drawn(d, size) for d in range(10)], top_k=1, model="digits_cnn")
    assert [r[0].label for r in result.results] == [str(d) for d in range(10)]


def test_digit_in_any_format_polarity_and_page(digits_server: RunningServer) -> None:
    seven = drawing(7)
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned 90° clockwise; displayed upright
    images = [
        png(seven.convert("RGB"), "JPEG", quality=85),
        png(seven, "GIF"),
        png(seven.convert("RGB"), "WEBP"),
        png(Image.eval(seven, lambda v: 255 - v)),  # light ink on a dark background
        png(drawing(7, 160, page=(480, 220))),  # a wide page: fit keeps the aspect ratio
        png(seven.rotate(-90, expand=True).convert("RGB"), "JPEG", exif=exif),
    ]
    with TaskClient(digits_server.address) as client:
        result = client.classify(images, top_k=1, model="digits_cnn")
    assert [r[0].label for r in result.results] == ["7"] * len(images)


def test_digits_refuse_garbage(digits_server: RunningServer) -> None:
    with TaskClient(digits_server.address) as client, pytest.raises(ClientError) as caught:
        client.classify([b"GIF89a but not really"], model="digits_cnn")
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
