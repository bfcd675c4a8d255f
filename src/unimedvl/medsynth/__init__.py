"""MedSynth: a procedurally generated medical benchmark with exact ground truth, and a small real-image set.

- :mod:`.images`: scenes (modality, anatomy, lesions) rendered as CT-, MRI-, X-ray-, H&E- and
  fundus-like images, and the degradations;
- :mod:`.generator`: the tasks built on them (VQA, reports, restoration, stain translation,
  counterfactuals, text-to-image) and :func:`generate_medsynth`, which writes a dataset;
- :mod:`.real_set`: the real-image restoration test set from files shipped inside installed packages;
- :mod:`.writers`: PNG / JSONL / YAML writers with stable bytes;
- :mod:`.cli`: ``unimedvl synth``.

An application of the library (it writes data the training pipeline reads); the library never imports it.
"""
