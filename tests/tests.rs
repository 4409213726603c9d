//! tenpak's integration tests: one binary, one module per area (the ripgrep layout).

mod common;

mod analyze;
mod blockfloat;
mod calib;
mod cli;
mod codecs;
mod container;
mod delta;
mod eval;
mod fuzz_replay;
mod gguf_out;
mod inputs;
mod int;
mod kv;
mod mixed;
mod models;
mod prune;
