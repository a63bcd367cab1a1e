"""Images in and out (ImageData, NIfTI/TIFF/PNG/DICOM readers and writers) and what is done to them before and after a network (normalisation, rescaling)."""
