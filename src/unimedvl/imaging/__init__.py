"""Medical images in and out: reading DICOM / NIfTI / arrays / PNG-JPEG-TIFF under one pixel limit
(``medical_io`` for the model's 8-bit view, ``raw`` for the stored values, ``pixel_limit``), the file
suffixes and their readers (``formats``), intensity windows (``windowing``), the view options and
upload decoding the web app and the HTTP API share (``views``), and every resize: the VAE and ViT
paths' and the others (``transforms``). Knows nothing of records or models."""
