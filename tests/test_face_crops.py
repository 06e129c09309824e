"""Face cropping for the face index: the detector loaded from a detection checkpoint, crops, folders.

The detector is a tiny SSD trained one step on generated WIDER FACE scenes: these tests check the
plumbing (types, boxes inside the photo, counts), not how well it finds faces (docs/detection.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backbone.errors import BadInputError
from datasets.demo.wider_face import write_wider_face
from tasks.detection.task import TASK as DETECTION
from tasks.face_embedding.face_crops import Detection, FaceDetector, crop_face, face_batch, faces_in_folder
from tests.probes import tiny_run_args

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def face_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A face detector (one SSD step at 64 px on 4 generated scenes) and the scenes' folder."""
    root, runs = write_wider_face(tmp_path_factory.mktemp("wider"), train=4, val=3), tmp_path_factory.mktemp("runs")
    args = ["--data.layout", "wider_face", "--trainer.num_sanity_val_steps", "0", "--trainer.max_steps", "1"]
    args += ["--trainer.limit_val_batches", "0"]
    DETECTION.main(["fit", *tiny_run_args(root, runs, *args, resolution=64, batch_size=4)])
    return str(runs / "checkpoints" / "last.ckpt"), root / "WIDER_val" / "images"


def _coordinates(width: int, height: int) -> Image.Image:
    """An image whose pixel (x, y) is (x, y, 7): every crop can be located exactly."""
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x, y, np.full_like(x, 7)], axis=-1).astype(np.uint8))


def test_crop_is_a_square_around_the_box_with_the_margin() -> None:
    image = _coordinates(100, 80)
    crop = np.asarray(crop_face(image, (40, 30, 60, 50), resolution=30, margin=0.25))  # side 20 * 1.5 = 30
    assert crop.shape == (30, 30, 3)
    assert crop[0, 0].tolist() == [35, 25, 7] and crop[-1, -1].tolist() == [64, 54, 7]  # centred on (50, 40)
    tall = np.asarray(crop_face(image, (45, 20, 55, 60), resolution=48, margin=0.1))  # the longer side: 40 * 1.2
    assert tall[0, 0].tolist() == [26, 16, 7] and tall[-1, -1].tolist() == [73, 63, 7]


def test_crop_is_padded_with_black_outside_the_image_and_resized() -> None:
    image = _coordinates(100, 80)
    crop = np.asarray(crop_face(image, (0, 0, 20, 20), resolution=40, margin=0.5))  # square from -10 to 30
    assert (crop[:10] == 0).all() and (crop[:, :10] == 0).all()
    assert crop[10, 10].tolist() == [0, 0, 7] and crop[39, 39].tolist() == [29, 29, 7]
    small = crop_face(image, (0, 0, 20, 20), resolution=16, margin=0.5)
    assert small.size == (16, 16) and small.mode == "RGB"
    assert face_batch([small, small], 16).shape == (2, 3, 16, 16)
    with pytest.raises(BadInputError, match=r"The face box \[5, 5, 5, 9\] is empty"):
        crop_face(image, (5, 5, 5, 9), 16)


def test_detector_loads_from_a_detection_checkpoint(face_checkpoint: tuple[str, Path]) -> None:
    ckpt, photos = face_checkpoint
    detector = FaceDetector.load(ckpt, score_threshold=0.01)
    assert not detector.model.training and detector.resolution == 64 and detector.label == 1
    images = [Image.open(path).convert("RGB") for path in sorted(photos.rglob("*.jpg"))]
    found = detector.detect(images)
    assert len(found) == len(images) and all(isinstance(d, Detection) for faces in found for d in faces)
    for image, faces in zip(images, found, strict=True):
        for face in faces:
            x1, y1, x2, y2 = face.box
            assert 0 <= x1 <= x2 <= image.width and 0 <= y1 <= y2 <= image.height and face.score >= 0.01
    assert not any(p.requires_grad for p in detector.model.parameters())


def test_other_checkpoints_are_refused(face_checkpoint: tuple[str, Path], tiny_detector: str, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"detects square, disc, not faces; give a detector trained with"):
        FaceDetector.load(tiny_detector)  # a detector of shapes
    other = torch.load(face_checkpoint[0], weights_only=True)
    other["mobilenet_suite"]["task"] = "face_embedding"
    torch.save(other, tmp_path / "embedder.ckpt")
    with pytest.raises(BadInputError, match=r"holds a face_embedding model, not a detection one"):
        FaceDetector.load(tmp_path / "embedder.ckpt")


def test_faces_in_folder_largest_only_and_all(face_checkpoint: tuple[str, Path], tmp_path: Path, capsys) -> None:
    ckpt, photos = face_checkpoint
    detector = FaceDetector.load(ckpt, score_threshold=0.01)
    every = faces_in_folder(detector, photos, resolution=24, largest_only=False, batch_size=2)
    all_faces = list(every)
    largest = faces_in_folder(detector, photos, resolution=24, largest_only=True, batch_size=2)
    one_each = list(largest)
    assert every.photos == largest.photos == 3 and every.unreadable == 0
    assert len(one_each) == 3 - len(largest.no_face) and len({f.path for f in one_each}) == len(one_each)
    assert len(all_faces) >= len(one_each)
    for face in one_each:  # the largest of its photo's faces
        areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in all_faces if f.path == face.path]
        assert (face.box[2] - face.box[0]) * (face.box[3] - face.box[1]) == pytest.approx(max(areas))
        assert face.crop.size == (24, 24)
    # nothing scores 0.999 after one step: every photo is reported by name and counted
    strict = FaceDetector.load(ckpt, score_threshold=0.999)
    nothing = faces_in_folder(strict, photos, resolution=24, largest_only=True)
    capsys.readouterr()
    assert list(nothing) == [] and len(nothing.no_face) == 3
    err = capsys.readouterr().err
    assert "No face found in 3 of 3 photos" in err and nothing.no_face[0] in err


def test_index_enrols_and_searches_faces_in_photos(face_checkpoint: tuple[str, Path], tmp_path: Path) -> None:
    """--detector: build enrols the largest face of each photo; search reports every face with its box."""
    import csv

    from tasks.face_embedding.index import FaceIndex
    from tasks.face_embedding.index_cli import main
    from tests.test_face_index import calibrated_checkpoint

    ckpt, photos = face_checkpoint
    gallery = tmp_path / "gallery"
    for number, photo in enumerate(sorted(photos.rglob("*.jpg"))):  # one "person" per photo
        (gallery / f"person{number}").mkdir(parents=True)
        (gallery / f"person{number}" / photo.name).write_bytes(photo.read_bytes())
    embedder = calibrated_checkpoint(tmp_path / "embedder.ckpt", gallery, seed=0)
    detect = ["--detector", ckpt, "--detector-score", "0.01", "--num-workers", "0"]
    main(["build", "--ckpt", str(embedder), "--images", str(gallery), "--out", str(tmp_path / "f.index"), *detect])
    index = FaceIndex.load(tmp_path / "f.index")
    assert 0 < index.size <= 3  # at most one face (the largest) per photo
    results = tmp_path / "results.csv"
    main(["search", "--index", str(tmp_path / "f.index"), "--images", str(photos), "--out", str(results), *detect])
    rows = list(csv.DictReader(results.open()))
    assert rows and list(rows[0]) == ["query", "face", "box", "rank", "identity", "path", "similarity"]
    for row in rows:
        x1, y1, x2, y2 = map(float, row["box"].split())
        with Image.open(row["query"]) as image:
            assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
    with pytest.raises(SystemExit):
        main(["search", "--index", str(tmp_path / "f.index"), "--embeddings", str(tmp_path), *detect])
