//! `arlm prepare`: text files -> train.bin, val.bin, meta.json.
//! (Not built yet: the foundation issue fills this in.)
