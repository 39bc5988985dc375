"""Step code of the road-counter pipeline (``scenarios/pipelines/road_counter.yaml``).

A roadside camera sends small grey frames; the pipeline counts the vehicles on each:

- ``vectorize``: the UINT8 frame as a flat vector in [0, 1], its background (per-row median:
  the road surface and its lighting gradient) subtracted, so vehicles stand out;
- ``faulty_image_filter`` (router): frames that are blank, over-exposed or without contrast
  are ``rejected``; good ones pass on as ``frame``;
- ``object_detection``: thresholds the frame, labels connected bright regions
  (``scipy.ndimage.label``) and reports their pixel areas, largest first;
- ``counter``: vehicles (regions of a car's size or larger) and trucks among them.

:func:`frames` is the traffic: synthetic frames with a lit road, lane markings, sensor noise,
cars and trucks, and now and then a faulty frame.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

HEIGHT, WIDTH = 24, 32
MAX_OBJECTS = 8
DETECTION_THRESHOLD = 0.25  # above the background, in [0, 1] units
MIN_VEHICLE_AREA = 8
MIN_TRUCK_AREA = 40
MIN_CONTRAST = 0.02

Inputs = dict[str, np.ndarray]


def vectorize(inputs: Inputs) -> dict[str, np.ndarray]:
    image = inputs["image"].reshape(HEIGHT, WIDTH).astype(np.float32) / 255.0
    background = np.median(image, axis=1, keepdims=True)
    return {"pixels": (image - background).reshape(1, -1),
            "brightness": np.array([image.mean()], np.float32)}


def faulty_image_filter(inputs: Inputs) -> dict[str, np.ndarray]:
    pixels = inputs["pixels"]
    brightness = float(inputs["brightness"][0])
    usable = 0.05 < brightness < 0.95 and float(pixels.std()) > MIN_CONTRAST
    if usable:
        return {"frame": pixels}
    return {"rejected": np.ones(1, np.bool_)}


def object_detection(inputs: Inputs) -> dict[str, np.ndarray]:
    frame = inputs["frame"].reshape(HEIGHT, WIDTH)
    labels, found = ndimage.label(frame > DETECTION_THRESHOLD)
    areas = np.sort(np.bincount(labels.ravel())[1:])[::-1][:MAX_OBJECTS].astype(np.float32)
    padded = np.zeros((1, MAX_OBJECTS), np.float32)
    padded[0, :areas.size] = areas
    return {"areas": padded, "objects": np.array([found], np.int64)}


def counter(inputs: Inputs) -> dict[str, np.ndarray]:
    areas = inputs["areas"].reshape(-1)
    return {"vehicles": np.array([(areas >= MIN_VEHICLE_AREA).sum()], np.int64),
            "trucks": np.array([(areas >= MIN_TRUCK_AREA).sum()], np.int64)}


STEPS = {
    "vectorize": vectorize,
    "faulty_image_filter": faulty_image_filter,
    "object_detection": object_detection,
    "counter": counter,
}


def _frame(rng: np.random.Generator, faulty_rate: float) -> np.ndarray:
    if rng.random() < faulty_rate:
        return np.full((HEIGHT, WIDTH), rng.choice([0, 255]), np.uint8)  # dead or blinded sensor
    light = rng.uniform(0.25, 0.45)
    image = np.tile(np.linspace(light, light + 0.1, HEIGHT)[:, None], (1, WIDTH))
    image[HEIGHT // 2, ::4] += 0.3  # lane marking
    for _ in range(rng.poisson(2.0)):
        truck = rng.random() < 0.2
        h, w = (6, 10) if truck else (3, 4)
        top, left = rng.integers(0, HEIGHT - h), rng.integers(0, WIDTH - w)
        image[top:top + h, left:left + w] = rng.uniform(0.8, 1.0)
    image += rng.normal(0.0, 0.03, image.shape)
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def frames(rng: np.random.Generator, n: int, faulty_rate: float = 0.03) -> dict[str, np.ndarray]:
    """``n`` camera frames (UINT8 [1, HEIGHT, WIDTH] each) and the camera's id."""
    images = np.stack([_frame(rng, faulty_rate) for _ in range(n)])[:, None]
    return {"image": images, "camera_id": rng.integers(1, 5, (n, 1))}
