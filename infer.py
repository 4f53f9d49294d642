"""Emotion recognition on a camera, a video, an image or a folder of images.

    python infer.py source=0 # first webcam, live window
    python infer.py source=clip.mp4 output=clip_annotated.mp4
    python infer.py source=photo.jpg output=photo_annotated.jpg
    python infer.py source=photos/ output=annotated/ predictions=preds.csv
    python infer.py source=crops/ detect=false predictions=preds.csv   # pre-cropped faces

The same command as `python -m fer.infer` and `fer-infer` (fer/cli/infer.py), which work from any directory.
"""

from fer.cli.infer import main

if __name__ == "__main__":
    main()
