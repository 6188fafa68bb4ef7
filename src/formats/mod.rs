//! Model file formats, read without trusting the file: used by the verify stage and
//! `minerva verify`. Pure parsing; no policy about where files come from.

pub mod gguf;
