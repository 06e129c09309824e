"""WIDER FACE read in place: the box files, their refusals, the COCO dict and the data module's layout."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backbone.errors import BadInputError
from datasets.coco import CocoDataModule, CocoDetection
from datasets.demo.wider_face import SceneStyle, draw_scene, write_wider_face
from datasets.wider_face import read_boxes, to_coco

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# As WIDER FACE writes it: a trailing space (~) after every box line, ten zeros after a count of 0.
GOOD = """0--Parade/0_Parade_1.jpg
2
10 12 20 24 0 0 0 0 0 0~
30 5 8 9 2 0 1 1 2 1~
0--Parade/0_Parade_2.jpg
0
0 0 0 0 0 0 0 0 0 0~
1--Handshaking/1_Handshaking_3.jpg
2
4 4 0 10 0 0 0 0 0 0~
40 30 15 15 0 1 0 0 1 0~
""".replace("~", " ")


def _write(root: Path, text: str, images: tuple[str, ...] = ()) -> Path:
    path = root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    for name in images:
        image = root / "WIDER_val" / "images" / name
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (90, 90, 90)).save(image)
    return path


def test_box_file_with_an_empty_image_and_invalid_faces(tmp_path: Path) -> None:
    images, boxes, attributes, owner = read_boxes(_write(tmp_path, GOOD))
    assert images == [("0--Parade/0_Parade_1.jpg", 1), ("0--Parade/0_Parade_2.jpg", 5),
                      ("1--Handshaking/1_Handshaking_3.jpg", 8)]  # fmt: skip
    assert owner.tolist() == [0, 0, 2, 2]  # the line of zeros is not a face
    assert boxes[1].tolist() == [30, 5, 8, 9]
    # blur expression illumination invalid occlusion pose, in the readme's order
    assert attributes[1].tolist() == [2, 0, 1, 1, 2, 1]


def test_coco_dict_ignores_invalid_faces_and_drops_boxes_without_extent(tmp_path: Path) -> None:
    names = ("0--Parade/0_Parade_1.jpg", "0--Parade/0_Parade_2.jpg", "1--Handshaking/1_Handshaking_3.jpg")
    path = _write(tmp_path, GOOD, names)
    data = to_coco(path, tmp_path / "WIDER_val" / "images")
    assert data["categories"] == [{"id": 1, "name": "face", "supercategory": "person"}]
    assert [(i["id"], i["width"], i["height"]) for i in data["images"]] == [(1, 64, 48), (2, 64, 48), (3, 64, 48)]
    assert [a["iscrowd"] for a in data["annotations"]] == [0, 1, 0, 0]  # invalid = 1 -> an ignore region
    dataset = CocoDetection(tmp_path / "WIDER_val" / "images", path, 64, annotation_data=data)
    assert (dataset.n_crowd, dataset.n_dropped) == (1, 1)  # the 0-wide box is dropped, the invalid one ignored
    assert [len(dataset.split.targets(i)[1]) for i in range(len(dataset))] == [1, 0, 1]
    assert len(dataset.ground_truth()["annotations"]) == 3  # the ignore region stays for the evaluator


def test_a_file_without_the_line_of_zeros_is_read(tmp_path: Path) -> None:
    images, boxes, _, owner = read_boxes(_write(tmp_path, GOOD.replace("0\n0 0 0 0 0 0 0 0 0 0 \n", "0\n")))
    assert len(images) == 3 and owner.tolist() == [0, 0, 2, 2] and len(boxes) == 4


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            ("30 5 8 9 2 0 1 1 2 1 ", "30 5 8 9 2 0 1 1 2"),
            r"line 4: the line '30 5 8 9 2 0 1 1 2' has 9 fields; "
            r"expected a box line 'x1 y1 w h blur expression illumination invalid occlusion pose'",
        ),
        (("30 5 8 9 2 0 1 1 2 1 ", "30 5 8 9 2 0 1 2 2 1 "), r"line 4: invalid is '2'; expected 0 or 1"),
        (("30 5 8 9 2", "30 5 8 x 2"), r"line 4: h is 'x'; expected a finite height in pixels"),
        (("2\n10 12", "two\n10 12"), r"line 2: face count is 'two'; expected a number of faces"),
        (
            ("\n2\n10 12", "\n3\n10 12"),
            r"line 5: the line '0--Parade/0_Parade_2.jpg' has 1 fields; expected a box "
            r"line .* \(3 follow the count of '0--Parade/0_Parade_1.jpg' on line 2\)",
        ),
        (
            ("1--Handshaking/1_Handshaking_3.jpg", "0--Parade/0_Parade_1.jpg"),
            r"line 8: image path is "
            r"'0--Parade/0_Parade_1.jpg'; expected each image path once \(it is also on line 1\)",
        ),
    ],
)
def test_malformed_lines_are_named(tmp_path: Path, change: tuple[str, str], pattern: str) -> None:
    text = GOOD.replace(*change, 1)
    path = _write(tmp_path, text)
    with pytest.raises(BadInputError) as error:
        read_boxes(path)
    message = str(error.value)
    assert message.startswith(f"The WIDER FACE annotation file {str(path)!r} "), message
    assert message.count(". ") == 0 and message.endswith("."), message  # one sentence
    assert re.search(pattern, message), message


def test_a_file_cut_inside_the_boxes_and_a_missing_image_are_named(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.rsplit("40 30", 1)[0])
    with pytest.raises(BadInputError, match=r"ends inside the 2 box lines of '1--Handshaking/1_Handshaking_3.jpg'"):
        read_boxes(path)
    path = _write(tmp_path, GOOD, ("0--Parade/0_Parade_1.jpg",))
    with pytest.raises(BadInputError, match=r"line 5: the image '.*0_Parade_2.jpg' does not exist"):
        to_coco(path, tmp_path / "WIDER_val" / "images")


def test_the_data_module_reads_the_wider_face_layout(tmp_path: Path) -> None:
    write_wider_face(tmp_path, train=4, val=3)
    data = CocoDataModule(str(tmp_path), resolution=64, batch_size=2, num_workers=0, layout="wider_face")
    assert data.num_classes == 2 and data.output_names("fit") == {"categories": ["face (id 1)"]}
    data.setup("fit")
    assert (len(data.dataset("train")), len(data.dataset("val"))) == (4, 3)
    images, targets = next(iter(data.train_dataloader()))
    assert images.shape == (2, 3, 64, 64) and all((t["labels"] == 1).all() for t in targets)
    assert data.val_ground_truth()["categories"][0]["name"] == "face"
    # the layout names its own files when one is missing
    with pytest.raises(BadInputError, match=r"The WIDER FACE file .*wider_face_val_bbx_gt\.txt' is missing"):
        CocoDataModule(str(tmp_path / "WIDER_train"), layout="wider_face")


def test_group_photos_place_the_given_people() -> None:
    from datasets.demo.faces import random_face

    rng = np.random.default_rng(3)
    people = [random_face(rng) for _ in range(3)]
    style = SceneStyle(face_px=(40.0, 60.0), distractors=(0, 0))
    scene, placed = draw_scene(people, rng, style, size=(320, 200))
    assert scene.shape == (200, 320, 3) and scene.dtype == np.uint8
    assert len(placed) == 3
    for face in placed:
        x, y, w, h = face.box
        assert 0 <= x and 0 <= y and x + w <= 320 and y + h <= 200 and w >= 20 and h >= 20
