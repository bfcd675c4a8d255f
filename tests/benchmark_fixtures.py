"""Tiny benchmark folders in each publisher's real layout (a few records, 8 px images), written per test.

Field names, file names and splits follow src/unimedvl/benchmarks/*.py (the publishers' layouts);
each builder returns the folder (or file) a user would pass, and its docstring says what is in it.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image


def image_bytes(shade: int, fmt: str = "PNG", size: int = 8) -> bytes:
    """An encoded ``size`` px grey image of one shade (distinct shades give distinct bytes)."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (shade, shade, 255 - shade)).save(buf, format=fmt)
    return buf.getvalue()


def _image(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(shade, "JPEG" if path.suffix == ".jpg" else "PNG"))


def vqa_rad_release(root: Path) -> Path:
    """5 test questions (3 closed incl. a non-yes/no one, 2 open; one image missing) + 2 train."""
    rows = [
        ("1", "test_freeform", "synpic1.jpg", "Is there a mass?", "Yes", "CLOSED", "PRES"),
        ("2", "test_para", "synpic1.jpg", "Is a mass present?", "no", " closed ", "PRES"),
        ("3", "test_freeform", "synpic2.jpg", "Which side is the lesion on?", "Left", "CLOSED", "POS"),
        ("4", "test_freeform", "synpic2.jpg", "What organ is shown?", "the liver", "OPEN", "ORGAN"),
        ("5", "test_para", "synpic_missing.jpg", "What is abnormal?", "pleural effusion", "open", "abn"),
        ("6", "freeform", "synpic1.jpg", "Is this a CT?", "yes", "CLOSED", "MODALITY"),
        ("7", "para", "synpic2.jpg", "What plane?", "axial", "OPEN", "PLANE"),
    ]
    records = [
        {
            "qid": qid,
            "phrase_type": phrase,
            "qid_linked_id": f"L{qid}",
            "image_case_url": "http://x",
            "image_name": image,
            "image_organ": "CHEST",
            "evaluation": "given",
            "question": q,
            "question_rephrase": "NULL",
            "question_relation": "NULL",
            "question_frame": "NULL",
            "question_type": qtype,
            "answer": a,
            "answer_type": atype,
        }
        for qid, phrase, image, q, a, atype, qtype in rows
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records, indent=1))
    for i, name in enumerate(("synpic1.jpg", "synpic2.jpg")):
        _image(root / "VQA_RAD Image Folder" / name, 40 + 80 * i)
    return root


def _parquet(path: Path, rows: list[tuple[bytes, str, str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "image": [{"bytes": b, "path": None} for b, _, _ in rows],
            "question": [q for _, q, _ in rows],
            "answer": [a for _, _, a in rows],
        }
    )
    pq.write_table(table, path)


def hf_snapshot(root: Path, splits: dict[str, list[list[tuple[bytes, str, str]]]]) -> Path:
    """``data/<split>-0000k-of-0000n-<hash>.parquet`` shards: split -> shards -> (image bytes, question, answer)."""
    for split, shards in splits.items():
        for k, rows in enumerate(shards):
            _parquet(root / "data" / f"{split}-{k:05d}-of-{len(shards):05d}-{k:04x}e5bc3d208bb4.parquet", rows)
    return root


def vqa_rad_parquet(root: Path) -> Path:
    """test: 2 shards, 4 rows (2 yes/no, 2 open; one repeats an image; one row's bytes are broken); train: 1 row."""
    a, b = image_bytes(10), image_bytes(200, "JPEG")
    test = [
        [(a, "is there a fracture?", "yes"), (a, "where is the fracture?", "left femur")],
        [(b, "is the heart enlarged?", "No"), (b"\x89PNG-not-really", "what is shown?", "lung")],
    ]
    return hf_snapshot(root, {"test": test, "train": [[(b, "is this an mri?", "no")]]})


def path_vqa_parquet(root: Path) -> Path:
    """validation: 2 rows, test: 3 rows (2 yes/no)."""
    img = image_bytes(90)
    return hf_snapshot(
        root,
        {
            "validation": [[(img, "is this h&e?", "yes"), (img, "what stain?", "h&e")]],
            "test": [
                [(img, "is there necrosis?", "yes"), (img, "are nuclei large?", "no"), (img, "what organ?", "kidney")]
            ],
        },
    )


def slake(root: Path) -> Path:
    """Slake1.0/: test = 3 English (2 open, 1 closed left/right) + 2 Chinese; validate 1; train 1."""
    base = root / "Slake1.0"

    def rec(qid, lang, q, a, atype, content="Organ", modality="CT", img="xmlab1/source.jpg"):
        return {
            "img_id": 1,
            "img_name": img,
            "question": q,
            "answer": a,
            "q_lang": lang,
            "location": "Lung",
            "modality": modality,
            "answer_type": atype,
            "base_type": "vqa",
            "content_type": content,
            "triple": ["vhead", "_", "_"],
            "qid": qid,
        }

    test = [
        rec(1, "en", "What modality is used?", "CT", "OPEN", "Modality"),
        rec(2, "en", "Which organ is abnormal?", "Left Lung", "OPEN"),
        rec(3, "en", "Is the lesion on the left or right?", "Left", "CLOSED", "Position", "MRI", "xmlab2/source.jpg"),
        rec(4, "zh", "这是什么模态?", "CT", "OPEN", "Modality"),
        rec(5, "zh", "有病变吗?", "是", "CLOSED", "Abnormality"),
    ]
    base.mkdir(parents=True, exist_ok=True)
    (base / "test.json").write_text(json.dumps(test, ensure_ascii=False))
    (base / "validate.json").write_text(json.dumps([rec(10, "en", "Is this a CT?", "Yes", "CLOSED")]))
    (base / "train.json").write_text(json.dumps([rec(20, "en", "Is this an MRI?", "No", "CLOSED")]))
    for i in (1, 2):
        _image(base / "imgs" / f"xmlab{i}" / "source.jpg", 60 * i)
    (base / "mask.txt").write_text("")
    return root


def omnimedvqa(root: Path) -> Path:
    """OmniMedVQA/: Open-access 3 questions (2-4 options, gt as text; one gt as letter) + 1 bad; Restricted 1."""
    base = root / "OmniMedVQA"

    def rec(qid, q, gt, opts, image, qtype="Disease Diagnosis", modality_key="modality_type"):
        r = {
            "dataset": "ACRIMA",
            "question_id": qid,
            "question_type": qtype,
            "question": q,
            "gt_answer": gt,
            "image_path": image,
            modality_key: "Fundus Photography",
        }
        r.update({f"option_{k}": v for k, v in zip("ABCD", opts)})
        return r

    open_access = [
        rec("acrima_1", "Is there glaucoma?", "Glaucoma", ["Normal", "Glaucoma"], "Images/ACRIMA/a.png"),
        rec(
            "acrima_2",
            "What is shown?",
            "Optic disc",
            ["Macula", "Optic disc", "Vessel", "Lens"],
            "Images/ACRIMA/b.png",
            "Anatomy Identification",
            "modality",
        ),
        rec("acrima_3", "Which modality?", "C", ["CT", "MRI", "Fundus"], "Images/ACRIMA/a.png", "Modality Recognition"),
        rec("acrima_4", "Grade?", "Grade 9", ["Grade 1", "Grade 2"], "Images/ACRIMA/a.png"),
    ]
    qa = base / "QA_information"
    (qa / "Open-access").mkdir(parents=True)
    (qa / "Open-access" / "ACRIMA.json").write_text(json.dumps(open_access))
    (qa / "Restricted-access").mkdir(parents=True)
    (qa / "Restricted-access" / "Private.json").write_text(
        json.dumps([rec("p_1", "Lesion?", "Yes", ["Yes", "No"], "Images/Private/x.png")])
    )
    _image(base / "Images" / "ACRIMA" / "a.png", 30)
    _image(base / "Images" / "ACRIMA" / "b.png", 130)
    return root


def vlmevalkit_tsv(path: Path, *, broken_row: bool = True) -> Path:
    """GMAI-style TSV: 5 rows (one forward and one backward image reference, one row with options A-C only,
    one without an answer) and, with ``broken_row``, a sixth whose base64 is broken."""
    img0, img1 = (base64.b64encode(image_bytes(s, size=16)).decode() for s in (50, 150))
    header = [
        "index",
        "image",
        "question",
        "hint",
        "A",
        "B",
        "C",
        "D",
        "E",
        "answer",
        "category",
        "l2-category",
        "split",
        "clinical VQA task",
        "department",
        "perceptual granularity",
        "modality",
    ]
    rows = [
        [
            "0",
            img0,
            "What modality?",
            "",
            "CT",
            "MRI",
            "X-ray",
            "PET",
            "",
            "B",
            "MRI",
            "Modality",
            "VAL",
            "Modality Recognition",
            "Radiology",
            "Image Level",
            "MRI",
        ],
        [
            "1",
            "3",
            "Which organ?",
            "Axial slice.",
            "Liver",
            "Kidney",
            "Spleen",
            "",
            "",
            "A",
            "Liver",
            "Organ",
            "VAL",
            "Organ Recognition",
            "Radiology",
            "Image Level",
            "CT",
        ],
        [
            "2",
            "0",
            "Is there a lesion?",
            "",
            "Yes",
            "No",
            "nan",
            "",
            "",
            "B",
            "No",
            "Lesion",
            "VAL",
            "Lesion Recognition",
            "Oncology",
            "Region Level",
            "MRI",
        ],
        [
            "3",
            img1,
            "What stain?",
            "",
            "H&E",
            "IHC",
            "PAS",
            "Trichrome",
            "Silver",
            "A",
            "H&E",
            "Stain",
            "VAL",
            "Stain Recognition",
            "Pathology",
            "Image Level",
            "Pathology",
        ],
        [
            "4",
            img1,
            "Grade?",
            "",
            "1",
            "2",
            "3",
            "4",
            "",
            "",
            "2",
            "Grade",
            "TEST",
            "Grading",
            "Pathology",
            "Image Level",
            "Pathology",
        ],
    ]
    if broken_row:
        rows.append(["5", "@" * 80, "Broken?", "", "a", "b", "", "", "", "A", "a", "X", "VAL", "X", "X", "X", "X"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def llava_med(root: Path) -> Path:
    """data_RAD/test.json: 3 questions (one with the misspelt 'conversatons' key, one 'yes/no' type)."""
    base = root / "data_RAD"

    def rec(qid, question, answer, atype, key="conversations"):
        return {
            "id": qid,
            "image": f"synpic{qid}.jpg",
            "answer_type": atype,
            key: [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
        }

    records = [
        rec(1, "Is there a mass?", "yes", "CLOSED"),
        rec(2, "What organ?", "liver", "OPEN", "conversatons"),
        rec(3, "Is it normal?", "no", "yes/no"),
    ]
    base.mkdir(parents=True, exist_ok=True)
    (base / "test.json").write_text(json.dumps(records))
    for i in (1, 2, 3):
        _image(base / f"synpic{i}.jpg", 20 * i)
    return base / "test.json"


# -- Hugging Face downloads as they arrive (written with pyarrow, in the layouts the datasets library writes) --


def _hf_table(rows: list[tuple[bytes, str, str]]):
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.table(
        {
            "image": pa.array([{"bytes": b, "path": None} for b, _, _ in rows], type=image),
            "question": [q for _, q, _ in rows],
            "answer": [a for _, _, a in rows],
        }
    )


def _arrow_stream(path: Path, rows: list[tuple[bytes, str, str]]) -> None:
    """An Arrow IPC stream, the format of the datasets library's cache and save_to_disk files."""
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    table = _hf_table(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)


def _info(folder: Path, name: str) -> None:
    (folder / "dataset_info.json").write_text(
        json.dumps(
            {
                "dataset_name": name,
                "features": {
                    "image": {"_type": "Image"},
                    "question": {"dtype": "string", "_type": "Value"},
                    "answer": {"dtype": "string", "_type": "Value"},
                },
            }
        )
    )


def hf_arrow_cache(
    cache_dir: Path, repo: str, splits: dict[str, list[tuple[bytes, str, str]]], stale: bool = True
) -> Path:
    """What ``load_dataset(repo, cache_dir=cache_dir)`` leaves: ``<org>___<name>/default/0.0.0/<hash>/<name>-<split>.arrow``
    (and, with ``stale``, an older hash folder holding one wrong row, which must not be read)."""
    import os

    org, name = repo.split("/")
    version = cache_dir / f"{org}___{name}" / "default" / "0.0.0"
    if stale:
        old = version / "0123abcd"
        _arrow_stream(old / f"{name}-test.arrow", [(image_bytes(1), "stale?", "stale")])
        _info(old, name)
        os.utime(old, (1_000_000, 1_000_000))
    new = version / "89efcdab"
    for split, rows in splits.items():
        _arrow_stream(new / f"{name}-{split}.arrow", rows)
    _info(new, name)
    (cache_dir / "downloads").mkdir(parents=True, exist_ok=True)
    return cache_dir


def hf_save_to_disk(folder: Path, splits: dict[str, list[tuple[bytes, str, str]]]) -> Path:
    """A ``DatasetDict.save_to_disk`` folder: dataset_dict.json and ``<split>/data-00000-of-00001.arrow``."""
    for split, rows in splits.items():
        _arrow_stream(folder / split / "data-00000-of-00001.arrow", rows)
        _info(folder / split, "x")
        (folder / split / "state.json").write_text(
            json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": split})
        )
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": sorted(splits)}))
    return folder


def hf_hub_cache(cache_dir: Path, repo: str, splits: dict[str, list[tuple[bytes, str, str]]]) -> Path:
    """The hub cache of a parquet repo: ``datasets--org--name/{refs/main, snapshots/<sha>/data/*.parquet, blobs/}``."""
    org, name = repo.split("/")
    folder = cache_dir / f"datasets--{org}--{name}"
    sha = "a" * 40
    for split, rows in splits.items():
        _parquet(folder / "snapshots" / sha / "data" / f"{split}-00000-of-00001.parquet", rows)
    _parquet(
        folder / "snapshots" / ("b" * 40) / "data" / "test-00000-of-00001.parquet",
        [(image_bytes(2), "old revision?", "old")],
    )
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / "0f1e2d").write_bytes(b"blob")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(sha)
    return folder


def slake_zipped(root: Path) -> Path:
    """:func:`slake` as the BoKelvin/SLAKE mirror ships it: imgs.zip (entries imgs/xmlabN/source.jpg), no imgs/."""
    import shutil
    import zipfile

    base = slake(root) / "Slake1.0"
    with zipfile.ZipFile(base / "imgs.zip", "w") as archive:
        for image in sorted((base / "imgs").rglob("*.jpg")):
            archive.write(image, image.relative_to(base).as_posix())
    shutil.rmtree(base / "imgs")
    return root


def pvqa_release(root: Path) -> Path:
    """pvqa/: qas/test/test_qa.pkl (3 questions, case kept) and qas/val_qa.pkl (1), images/<split>/<name>.jpg."""
    import pickle

    base = root / "pvqa"
    test = [
        {"image": "test_0000", "question": "Is there necrosis?", "answer": "yes"},
        {"image": "test_0000", "question": "Is there necrosis?", "answer": "yes"},  # the release keeps repeats
        {"image": "test_0001", "question": "What organ is this?", "answer": "Kidney"},
    ]
    (base / "qas" / "test").mkdir(parents=True)
    (base / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps(test))
    (base / "qas" / "val_qa.pkl").write_bytes(pickle.dumps([{"image": "val_0000", "question": "q?", "answer": "no"}]))
    for name, shade in (("test/test_0000.jpg", 10), ("test/test_0001.jpg", 90), ("val/val_0000.jpg", 150)):
        _image(base / "images" / name, shade)
    return root
