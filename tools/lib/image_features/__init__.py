"""Image (and CLIP text) features of the pool, behind `coco-unified image-features`.

models.py    the registry of models and the interface each implements (torch)
cnnf.py, vgg19.py, clip.py    the models
pipeline.py  streamed images, decoded and prepared in DataLoader workers
resume.py    ranks (torchrun) and the stored shards a killed run resumes from
extract.py   one run: mean image, features, merge, sidecar
sidecar.py   the Parquet sidecar's format, writer and reader (pyarrow and numpy only: no torch)
"""
