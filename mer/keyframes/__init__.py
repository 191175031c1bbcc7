"""The key-frame stage: each clip of the manifest becomes K key frames in a table.

video, decoder   frames of a clip (image folders, video files; one decoder per process)
faces, align     face crop and registration to the onset frame
motion           motion curves (frame differences or optical flow) and apex spotting
construction     where the K key frames sit (adaptive, uniform) on the motion curve
interpolator     the learned frame interpolator (AdaConv) for fractional positions
clip_records     one clip's key-frame record (decode -> register -> motion -> key frames)
settings         the key-frame settings that record is built with (from a config or a card)
preprocess       the stage's driver: the manifest in parallel on Ray Data, chunked, resumable
chunks           one chunk of clips built and written (what the stage's Ray Data actors run)
table            the key-frame table's format (parts, `_meta.json`, rejects), read and written
inspection       one clip's key frames and motion curve as a picture, for a person to check
"""
