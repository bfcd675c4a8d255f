"""Medical images in and out: reading DICOM / NIfTI / arrays / PNG-JPEG-TIFF under one pixel limit
(``medical_io``, ``pixel_limit``), intensity windows (``windowing``) and the resizing and
normalisation of the VAE and ViT paths (``transforms``). Knows nothing of records or models."""
