"""Video: shot clips, frame sampling and decoding, shot detection and the ffmpeg command line."""
