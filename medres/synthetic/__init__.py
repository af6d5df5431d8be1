"""Synthetic DICOM archives shaped like public releases and hospital exports, with their true labels."""
