//! GPT-2: a decoder-only transformer on arlm's own CPU kernels.
//! (Not built yet: the GPT issue fills this in.)
