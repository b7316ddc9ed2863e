"""dsbuilder: audio-visual facial-emotion datasets of chosen people, built from web video.

Importing this package is cheap: heavy libraries (PyAV, OpenCV, dlib, pyarrow, yt-dlp) are imported
inside the functions that need them so that ``dsbuilder --help`` stays fast.
"""

__version__ = "0.1.0"
