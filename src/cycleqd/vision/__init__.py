"""CycleQD over image-segmentation experts (the paper's second claim, on a CPU).

A small Segformer (transformers' ``SegformerForSemanticSegmentation``, configured locally, no hub
download) is trained on a general segmentation task of procedural scenes, then fine-tuned into one
expert per specific task (circles, squares, red objects, warm-coloured objects). The search is the
LLM path's own: expert SVD bases, genomes, crossover and mutation, archives and run directory;
only the task (:mod:`cycleqd.vision.task`, mIoU by torchmetrics) and the engine
(:mod:`cycleqd.vision.model`) are new. :mod:`cycleqd.vision.pipeline` is ``cycleqd demo --track
vision``.
"""
