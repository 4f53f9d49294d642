# FER2013's label order (0..6). Checkpoints store their own copy; this is the default.
EMOTIONS = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NUM_CLASSES = len(EMOTIONS)
