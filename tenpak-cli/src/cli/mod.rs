//! Command-line front end. Every subcommand parses its flags, builds the library's options, calls
//! one library function and prints its report as a table or, with `--json`, as one JSON document
//! (the wire format is documented in formats-spec/json-output.md).

mod eval;
mod kv;
mod table;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use tenpak::compress::{CompressOptions, DEFAULT_CHUNK_ELEMS};
use tenpak::decompress::{DecompressOptions, OutDType};
use tenpak::progress::{Event, Progress};
use tenpak::{Error, ErrorKind};

#[derive(Parser)]
#[command(
    name = "tenpak",
    version,
    about = "Compress model weights into the chunked, checksummed .tpk container, and back"
)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress a model (safetensors file, model folder, sharded index, or GGUF) into a .tpk.
    #[command(
        after_help = "Examples:\n  tenpak compress model.safetensors -o model.tpk          # lossless (byteplane)\n  tenpak compress models--org--name -o m.tpk --codec int4_g32   # a Hugging Face cache folder\n  tenpak compress model.gguf -o m.tpk --codec bfp8 --override token_embd.weight=int8\n  tenpak compress model.gguf -o m.tpk --target-bpw 4.5 --allocate sensitivity --sensitivity s.json\n  tenpak compress model.gguf --dry-run --codec nvfp4 --json     # sizes; nothing is written\n  tenpak codecs                                            # every codec name, bits per weight"
    )]
    Compress(CompressArgs),
    /// Show a .tpk's header, metadata and tensors (payloads unread, but for mixed tensors' tile codes).
    #[command(
        after_help = "Examples:\n  tenpak inspect model.tpk\n  tenpak inspect model.tpk --tensors\n  tenpak inspect model.tpk --json | jq '.tensors[0]'"
    )]
    Inspect(InspectArgs),
    /// Check every checksum and decode every chunk of a .tpk.
    #[command(
        after_help = "Examples:\n  tenpak verify model.tpk\n  tenpak verify model.tpk --json"
    )]
    Verify(VerifyArgs),
    /// Decode a .tpk back to safetensors, a model folder or a GGUF.
    #[command(
        after_help = "Examples:\n  tenpak decompress model.tpk -o model.safetensors\n  tenpak decompress model.tpk -o out.safetensors --dtype bf16 --max-shard-size 5GB\n  tenpak decompress model.tpk -o part.safetensors --filter model.layers.0\n  tenpak decompress model.tpk -o out/\n  tenpak decompress model.tpk -o model.gguf"
    )]
    Decompress(DecompressArgs),
    /// List the codecs this tenpak implements.
    #[command(
        after_help = "Examples:\n  tenpak codecs\n  tenpak codecs --json | jq '.[] | select(.bpw != null and .bpw < 5) | .name'"
    )]
    Codecs(JsonArg),
    /// Per-tensor, per-format error report: encode each tensor with each lossy format, measure.
    #[command(
        after_help = "Examples:\n  tenpak analyze model.safetensors -c bfp8 -c bfp4 -c nvfp4\n  tenpak analyze model.gguf -c all --json"
    )]
    Analyze(AnalyzeArgs),
    /// Draw plots that need no model.
    #[command(subcommand)]
    Plot(PlotCommand),
    /// Export a mixed tensor's stored tile assignment: assignment.npy (uint8, tile grid) and
    /// assignment_mapping.json (code -> format, tile size, shape).
    #[command(
        after_help = "Examples:\n  tenpak assignment mixed.tpk model.layers.0.mlp.up_proj.weight -o out/"
    )]
    Assignment(AssignmentArgs),
    /// Evaluate model quality: perplexity, KL divergence, top-1 agreement.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// KV-cache work: capture real caches from a model.
    #[command(subcommand)]
    Kv(eval::KvCommand),
    /// Run calibration text (the corpus tokens after the evaluation slice) through a llama model
    /// and write each matrix input's statistics: per-channel E[x²] (an importance matrix) and
    /// E[x xᵀ] (GPTQ's Hessian), for `compress --calibration`.
    #[command(
        after_help = "Examples:\n  tenpak calibrate model.gguf -o calib.safetensors\n  tenpak compress model.gguf -o m.tpk --codec int4_g32 --calibration calib.safetensors"
    )]
    Calibrate(eval::CalibrateArgs),
    /// Measure how a llama model's output (KLD against the exact model, ΔNLL) grows with each
    /// matrix's relative error, on calibration text after the evaluation slice: the αₜ of
    /// `compress --target-bpw --allocate sensitivity`.
    #[command(
        after_help = "Examples:\n  tenpak sensitivity model.gguf -o sens.json\n  tenpak compress model.gguf -o m.tpk --target-bpw 4.5 --allocate sensitivity --sensitivity sens.json"
    )]
    Sensitivity(eval::SensitivityArgs),
    /// Join the part files of `compress --shard K/N` into one .tpk, byte for byte the file one
    /// process would have written (chunks are copied, not encoded again).
    #[command(
        after_help = "Examples:\n  tenpak merge part1.tpk part2.tpk part3.tpk -o model.tpk\n  tenpak merge model.tpk -o set/model.tpk --max-shard-size 45GB\n  tenpak merge set/model.tpk.index.json -o model.tpk\n  for k in 1 2 3; do tenpak compress model.gguf -o part$k.tpk --codec int4_g32 --shard $k/3 & done; wait\n  scripts/cluster/slurm-compress.sh and scripts/cluster/k8s-compress-job.yaml run the parts on a cluster"
    )]
    Merge(MergeArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  tenpak completions bash > ~/.local/share/bash-completion/completions/tenpak\n  tenpak completions zsh > ~/.zfunc/_tenpak\n  tenpak completions fish > ~/.config/fish/completions/tenpak.fish"
    )]
    Completions(CompletionsArgs),
    /// Print a man page (roff): tenpak's, or one subcommand's.
    #[command(
        after_help = "Examples:\n  tenpak man > tenpak.1 && man ./tenpak.1\n  tenpak man compress > tenpak-compress.1"
    )]
    Man(ManArgs),
}

#[derive(Args)]
struct MergeArgs {
    /// The part files, in any order; or one whole model (a .tpk, or a set's .tpk.index.json) to
    /// re-write as one file or as a set.
    #[arg(required = true)]
    parts: Vec<PathBuf>,
    /// The merged .tpk (with --max-shard-size: NAME-0000K-of-0000N.tpk beside it, and the set's
    /// index NAME.tpk.index.json).
    #[arg(short, long)]
    output: PathBuf,
    /// Write a multi-file set whose files hold at most SIZE payload bytes each (e.g. 45GB, under
    /// a hosting limit), with an index every tenpak reader opens; one file if everything fits.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_shard_size: Option<u64>,
    /// Overwrite the outputs if they exist.
    #[arg(long)]
    force: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `K/N` with 1 <= K <= N.
fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("'{s}' is not K/N with 1 <= K <= N (e.g. 2/8)");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n) = (
        k.trim().parse::<usize>().map_err(|_| bad())?,
        n.trim().parse::<usize>().map_err(|_| bad())?,
    );
    if k == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

#[derive(Args)]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

#[derive(Args)]
struct ManArgs {
    /// A subcommand (`compress`, `eval ppl` as `eval-ppl`); none: the main page.
    subcommand: Option<String>,
}

#[derive(Args)]
struct AssignmentArgs {
    /// The .tpk file (or a multi-file set's .tpk.index.json).
    file: PathBuf,
    /// The tensor.
    tensor: String,
    /// Folder to write the two files into (created if missing).
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Print the mapping as JSON (with the codes) instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum PlotCommand {
    /// Input value -> reconstructed value per format: alone in its block ("ideal") and with
    /// random neighbours ("rand").
    #[command(
        after_help = "Examples:\n  tenpak plot staircase\n  tenpak plot staircase -c bfp4 -c nvfp4 -c mxfp4 --max 2 --out fp4.png"
    )]
    Staircase(StaircaseArgs),
}

#[derive(Args)]
struct StaircaseArgs {
    /// Format (repeatable; `all` = the tile formats). Default: bf16, bfp8, bfp4, bfp2, fp0.
    #[arg(short = 'c', long = "codec", value_name = "FORMAT")]
    formats: Vec<String>,
    /// Random neighbour sets per plotted value.
    #[arg(long, default_value_t = 20)]
    rand_samples: usize,
    /// Largest input value.
    #[arg(long, default_value_t = 4.0)]
    max: f32,
    /// Seed of the random neighbours.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output PNG.
    #[arg(long, default_value = "staircase.png")]
    out: PathBuf,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// Model file or folder.
    model: PathBuf,
    /// Only tensors matching: a query with a dot is a module prefix, otherwise a substring.
    filter: Option<String>,
    /// Format to analyze (repeatable; `all` = every lossy format). Default: the config's
    /// formats, else all.
    #[arg(short = 'c', long = "codec", value_name = "FORMAT")]
    formats: Vec<String>,
    /// Compression config (JSON): runs the `none` baseline and its algorithm.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Only the first N matching tensors (name order).
    #[arg(long)]
    limit: Option<usize>,
    /// Print only the per-format summary.
    #[arg(long)]
    summary: bool,
    /// Results folder (default: results/<model>/<algorithm>/<timestamp>/).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write no result files.
    #[arg(long, conflicts_with = "out")]
    no_files: bool,
    /// Store vectors raw as compress does, instead of tiling them.
    #[arg(long)]
    no_tile_vectors: bool,
    /// Draw plots/<tensor>.png: reconstructed vs original values, one series per format.
    #[arg(long, conflicts_with = "no_files")]
    plots: bool,
    /// Elements per chunk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_ELEMS)]
    chunk_elems: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct JsonArg {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CompressArgs {
    /// Model file or folder.
    model: PathBuf,
    /// Output .tpk file.
    #[arg(short, long, required_unless_present = "dry_run")]
    output: Option<PathBuf>,
    /// Print the plan (each tensor's pipeline, layout, chunks and predicted payload size)
    /// without reading any tensor data or writing anything.
    #[arg(long)]
    dry_run: bool,
    /// Codec pipeline: NAME[:key=value,...][+NAME...], e.g. bf16, byteplane, zstd:level=19.
    #[arg(long, default_value = "byteplane")]
    codec: String,
    /// Elements per chunk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_ELEMS)]
    chunk_elems: u64,
    /// Only tensors matching: a query with a dot is a module prefix, otherwise a substring.
    #[arg(long)]
    filter: Option<String>,
    /// Only the first N matching tensors (name order).
    #[arg(long)]
    limit: Option<usize>,
    /// Compress only part K of N (a deterministic share of the tensors, balanced by bytes) into
    /// a part file; `tenpak merge` joins the N parts into the file one process would write.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Overwrite the output if it exists.
    #[arg(long)]
    force: bool,
    /// Store user metadata KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Compression config (JSON, see compression_configs/): `transpose` applies to tile codecs;
    /// a mixed-tile algorithm picks a format per tile of every float tensor of two or more
    /// dimensions (the others use --codec).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Tile codecs: tile each tensor with its axes reversed (a matrix's transpose).
    #[arg(long)]
    transpose: bool,
    /// Prune each float tensor of two or more dimensions and store it sparsely, the kept
    /// values through --codec: magnitude:S (fraction S of the smallest), magnitude:threshold=T,
    /// rows:S or cols:S (whole rows/columns with the smallest L2 norms).
    #[arg(long, value_name = "RULE")]
    prune: Option<String>,
    /// Store each tensor the base model also has (same name, shape, dtype) as its difference:
    /// XOR of the bits through a lossless --codec (the default byteplane: bit-exact), or the
    /// f32 difference through a lossy one (int8_g64, f16, ...). decompress needs --base too.
    #[arg(long, value_name = "BASE")]
    base: Option<PathBuf>,
    /// A codec for the tensors FILTER selects (repeatable; the first match wins), e.g.
    /// `--override token_embd.weight=int8` to keep a tied embedding/output head at 8 bits.
    #[arg(long = "override", value_name = "FILTER=SPEC")]
    overrides: Vec<String>,
    /// Lossy codecs: apply them to vectors and scalars (norms, biases) too; by default these
    /// are stored raw.
    #[arg(long, visible_alias = "vectors")]
    tile_vectors: bool,
    /// Calibration statistics from `tenpak calibrate`: `int` (group=N) and `grid` tensors the
    /// file covers are encoded with them (GPTQ when the file has second moments, else
    /// importance-weighted scale searches); the payload format is the codec's own. The
    /// result is calibrated: the file's metadata says so, and which tokens.
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// With --calibration: GPTQ (error feedback through the inverse Hessian).
    #[arg(long, requires = "calibration", conflicts_with = "weighted")]
    gptq: bool,
    /// With --calibration: importance-weighted scale searches only, no GPTQ.
    #[arg(long, requires = "calibration")]
    weighted: bool,
    /// Choose a codec per tensor (floats of two or more dimensions) among --candidates so that
    /// the whole file is at most this many bits per weight, minimising the predicted output
    /// error (see --allocate). The others use --codec.
    #[arg(long, value_name = "BPW", conflicts_with = "target_bytes")]
    target_bpw: Option<f64>,
    /// As --target-bpw, with the file's size in bytes (e.g. 80MB, 64MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    target_bytes: Option<u64>,
    /// How a budget is spent: `sensitivity` (the measured αₜ of --sensitivity) or `proxy`
    /// (data-free: every matrix's relative error counts the same). Default: sensitivity when
    /// --sensitivity is given, else proxy.
    #[arg(long, value_name = "HOW", value_parser = ["sensitivity", "proxy"])]
    allocate: Option<String>,
    /// A sensitivity file from `tenpak sensitivity`: the αₜ of --target-bpw, or the
    /// output-aware weights of a whole-model mixed-tile-optimal config.
    #[arg(long, value_name = "FILE")]
    sensitivity: Option<PathBuf>,
    /// Candidate codecs of the allocation, comma-separated (key=value pieces continue the
    /// spec before them). Repeatable.
    #[arg(long, value_name = "LIST", default_value = DEFAULT_CANDIDATES)]
    candidates: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// The .tpk file (or a multi-file set's .tpk.index.json).
    file: PathBuf,
    /// List every tensor.
    #[arg(long)]
    tensors: bool,
    /// Print JSON (always includes every tensor).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// The .tpk file (or a multi-file set's .tpk.index.json).
    file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DecompressArgs {
    /// The .tpk file (or a multi-file set's .tpk.index.json).
    file: PathBuf,
    /// Output .safetensors file (shards go beside it), a folder `DIR/` (a model compressed from
    /// a Hugging Face folder comes back as that folder: its shards, index and small files), or a
    /// .gguf file (llama.cpp's format: the stored GGUF metadata, and each tensor in its GGML block
    /// type where the decoded values lie exactly on that type's grid, else as floats).
    #[arg(short, long)]
    output: PathBuf,
    /// Output format, safetensors or gguf; by default the output's name decides (.gguf: GGUF).
    #[arg(long, value_name = "FORMAT")]
    format: Option<tenpak::decompress::OutFormat>,
    /// Output element type: source, f32, f16 or bf16 (integer tensors always keep theirs). For
    /// GGUF, f32/f16/bf16 write every float tensor in that type, no quantized blocks.
    #[arg(long, default_value = "source")]
    dtype: OutDType,
    /// Only tensors matching (same rules as compress).
    #[arg(long)]
    filter: Option<String>,
    /// Split into shards of at most SIZE data bytes (e.g. 500MB, 2GiB), with an index file.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_shard_size: Option<u64>,
    /// The base model the file's delta tensors were made against (compress --base).
    #[arg(long, value_name = "BASE")]
    base: Option<PathBuf>,
    /// Overwrite outputs that exist.
    #[arg(long)]
    force: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `123`, `500KB`, `500MB`, `2GB` (powers of 1000) or `KiB`/`MiB`/`GiB` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        u => return Err(format!("unknown size unit '{u}'")),
    };
    let v: f64 = num.parse().map_err(|_| format!("'{s}' is not a size"))?;
    if v <= 0.0 {
        return Err("size must be positive".into());
    }
    Ok((v * mult as f64) as u64)
}

/// The allocation's default candidates: the fitted-scale Gaussian grids from 3 to 7 bits
/// (groups of 32, f16 scales) and int8.
const DEFAULT_CANDIDATES: &str = "grid:n=8,group=32,grid:n=16,group=32,grid:n=32,group=32,grid:n=64,group=32,grid:n=128,group=32,int8";

/// Set by the Ctrl-C, SIGTERM and SIGHUP handlers; long operations stop at the next tensor or
/// batch, removing their temporary outputs.
pub(crate) static CANCELLED: AtomicBool = AtomicBool::new(false);

/// The first signal that asked the run to stop (0 until one did): an interrupted run exits with
/// 128 + it (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), as a shell reports a signal.
pub(crate) static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// SIGTERM and SIGHUP, handled as Ctrl-C is: only async-signal-safe work here (atomics, and
/// `_exit` when a second signal comes before the clean stop).
#[cfg(target_os = "linux")]
extern "C" fn on_terminate(sig: libc::c_int) {
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::Relaxed, Ordering::Relaxed);
    if CANCELLED.swap(true, Ordering::Relaxed) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
}

/// First signal: stop cleanly (temporary outputs removed); a second one ends the process.
fn handle_stop_signals() {
    let _ = ctrlc::set_handler(|| {
        let _ = SIGNAL.compare_exchange(0, 2, Ordering::Relaxed, Ordering::Relaxed);
        if CANCELLED.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
    });
    #[cfg(target_os = "linux")]
    for sig in [libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only touches atomics and calls _exit.
        unsafe { libc::signal(sig, on_terminate as *const () as libc::sighandler_t) };
    }
}

/// Progress reporter: a bar when stderr is a terminal (and not `--quiet`), else nothing.
struct Reporter(Option<ProgressBar>);

impl Progress for Reporter {
    fn event(&self, e: Event<'_>) {
        let Some(bar) = &self.0 else { return };
        match e {
            Event::Start { total_bytes, .. } => {
                bar.set_length(total_bytes);
                bar.reset();
            }
            Event::Tensor { name } => bar.set_message(name.to_string()),
            Event::Advance { bytes } => bar.inc(bytes),
            Event::Finish => bar.finish_and_clear(),
        }
    }
}

fn progress(quiet: bool) -> Box<dyn Progress> {
    if quiet || !std::io::stderr().is_terminal() {
        return Box::new(Reporter(None));
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
        )
        .unwrap(),
    );
    Box::new(Reporter(Some(pb)))
}

/// Run the CLI; returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    handle_stop_signals();
    let reporter = progress(cli.quiet);
    let mut cx = tenpak::Context::default()
        .with_cancel(&CANCELLED)
        .with_progress(&*reporter)
        .with_figures(&crate::plot::Png);
    if let Some(n) = cli.threads {
        if n == 0 {
            eprintln!("tenpak: error: --threads must be at least 1");
            return 2;
        }
        cx = match cx.with_threads(n) {
            Ok(cx) => cx,
            Err(e) => {
                eprintln!("tenpak: error: {e}");
                return 1;
            }
        };
    }
    let mut out = Vec::new();
    let code = match dispatch(&cli, &cx, &mut out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tenpak: error: {e}");
            match e.kind {
                ErrorKind::Config => 2,
                ErrorKind::Interrupted => match SIGNAL.load(Ordering::Relaxed) {
                    0 => 130,
                    sig => 128 + sig,
                },
                _ => 1,
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&out).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("tenpak: error: writing output: {e}");
            1
        }
        _ => code,
    }
}

/// The subcommand `name` names (`eval-ppl` for `eval ppl`), renamed `tenpak-NAME` for its page.
fn find_subcommand(root: &clap::Command, name: &str) -> Option<clap::Command> {
    let mut cmd = root.clone();
    let parts: Vec<&str> = name.split(['-', ' ']).collect();
    let mut i = 0;
    // Names may hold dashes themselves (`eval-sweep-merge`): the longest match first.
    while i < parts.len() {
        let (j, sub) = (i + 1..=parts.len())
            .rev()
            .find_map(|j| Some((j, cmd.find_subcommand(parts[i..j].join("-"))?.clone())))?;
        cmd = sub;
        i = j;
    }
    let full = format!("tenpak-{}", parts.join("-"));
    Some(cmd.name(full).version(env!("CARGO_PKG_VERSION")))
}

/// Print a report's warnings on stderr (also in its `--json`).
fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("tenpak: warning: {w}");
    }
}

/// Load a config and print its warnings (ignored params) on stderr.
fn load_config(path: &std::path::Path) -> Result<tenpak::config::Config, Error> {
    let c = tenpak::config::Config::load(path)?;
    for w in &c.warnings {
        eprintln!("tenpak: warning: {w}");
    }
    Ok(c)
}

fn json(out: &mut Vec<u8>, v: &impl serde::Serialize) {
    serde_json::to_writer_pretty(&mut *out, v).expect("reports serialize");
    out.push(b'\n');
}

/// `compress --target-bpw/--target-bytes`: allocate, print the plan, then compress with it
/// (unless `--dry-run`).
fn compress_allocated(
    a: &CompressArgs,
    mut opts: CompressOptions,
    target: tenpak::allocate::Target,
    cx: &tenpak::Context<'_>,
    out: &mut Vec<u8>,
) -> Result<i32, Error> {
    let sensitivity = match (a.allocate.as_deref(), &a.sensitivity) {
        (Some("proxy"), _) => None,
        (_, Some(p)) => Some(tenpak::allocate::Sensitivity::read(p)?),
        (Some(_), None) => {
            return Err(Error::config(
                "--allocate sensitivity needs --sensitivity FILE (from tenpak sensitivity)",
            ))
        }
        (None, None) => None,
    };
    let candidates: Vec<String> = a
        .candidates
        .iter()
        .flat_map(|l| eval::split_specs(l))
        .collect();
    let source = tenpak::input::open(&a.model)?;
    let alloc = tenpak::allocate::allocate(
        &*source,
        &a.model,
        &opts,
        &tenpak::allocate::AllocOptions {
            target,
            candidates,
            sensitivity,
        },
        cx,
    )?;
    if a.dry_run {
        if a.json {
            json(out, &alloc);
        } else {
            table::allocation(out, &alloc);
        }
        return Ok(0);
    }
    opts.overrides = alloc.overrides();
    opts.allocation = Some(serde_json::to_value(&alloc).expect("plain data"));
    let output = a.output.as_deref().expect("clap requires --output");
    let r = tenpak::compress::compress_source(&*source, &a.model, output, &opts, cx)?;
    warn(&r.warnings);
    if a.json {
        json(
            out,
            &serde_json::json!({"allocation": alloc, "compress": r}),
        );
    } else {
        table::allocation(out, &alloc);
        table::compress(out, &r);
    }
    Ok(0)
}

fn dispatch(cli: &Cli, cx: &tenpak::Context<'_>, out: &mut Vec<u8>) -> Result<i32, Error> {
    match &cli.cmd {
        Command::Compress(a) => {
            let mut meta = Vec::new();
            for kv in &a.meta {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| Error::config(format!("--meta '{kv}' is not KEY=VALUE")))?;
                meta.push((k.to_string(), v.to_string()));
            }
            let config = a.config.as_deref().map(load_config).transpose()?;
            let opts = CompressOptions {
                codec: a.codec.clone(),
                chunk_elems: a.chunk_elems,
                filter: a.filter.clone(),
                limit: a.limit,
                force: a.force,
                meta,
                transpose: a.transpose,
                tile_vectors: a.tile_vectors,
                config: None,
                prune: a
                    .prune
                    .as_deref()
                    .map(tenpak::prune::Prune::parse)
                    .transpose()?,
                base: a.base.clone(),
                mixed: None,
                overrides: a
                    .overrides
                    .iter()
                    .map(|o| tenpak::plan::parse_override(o))
                    .collect::<Result<_, _>>()?,
                calibration: a.calibration.clone(),
                calib_mode: if a.gptq {
                    Some(tenpak::codec::calibrated::Mode::Gptq)
                } else if a.weighted {
                    Some(tenpak::codec::calibrated::Mode::Weighted)
                } else {
                    None
                },
                allocation: None,
                shard: a.shard,
            };
            let mut opts = opts;
            if let Some(c) = &config {
                opts.apply_config(c);
            }
            let target = match (a.target_bpw, a.target_bytes) {
                (Some(b), _) => Some(tenpak::allocate::Target::Bpw(b)),
                (None, Some(n)) => Some(tenpak::allocate::Target::Bytes(n)),
                (None, None) => None,
            };
            if let Some(target) = target {
                return compress_allocated(a, opts, target, cx, out);
            }
            if let (Some(path), Some(m)) = (&a.sensitivity, opts.mixed.as_mut()) {
                // A whole-model mixed-tile search takes the sensitivities as its weights.
                if !tenpak::mixed::whole_model(m) {
                    return Err(Error::config(
                        "--sensitivity weighs the whole-model mixed-tile search (\"scope\": \"model\"); this config plans each tensor alone",
                    ));
                }
                let sens = tenpak::allocate::Sensitivity::read(path)?;
                m.alphas = Some(std::sync::Arc::new(
                    sens.tensors
                        .iter()
                        .map(|t| (t.name.clone(), t.alpha))
                        .collect(),
                ));
            } else if a.allocate.is_some() || a.sensitivity.is_some() {
                return Err(Error::config(
                    "--allocate and --sensitivity need a budget (--target-bpw or --target-bytes) or a whole-model mixed-tile config",
                ));
            }
            if a.dry_run {
                let r = tenpak::compress::dry_run(&a.model, &opts)?;
                warn(&r.warnings);
                if a.json {
                    json(out, &r);
                } else {
                    table::plan(out, &r);
                }
                return Ok(0);
            }
            let output = a.output.as_deref().expect("clap requires --output");
            let r = tenpak::compress::compress(&a.model, output, &opts, cx)?;
            warn(&r.warnings);
            if a.json {
                json(out, &r);
            } else {
                table::compress(out, &r);
            }
            Ok(0)
        }
        Command::Analyze(a) => {
            let config = a.config.as_deref().map(load_config).transpose()?;
            let mut formats = Vec::new();
            for f in &a.formats {
                if f == "all" {
                    formats.extend(tenpak::analyze::all_formats());
                } else {
                    formats.push(f.clone());
                }
            }
            if formats.is_empty() {
                formats = match &config {
                    Some(c) => c.formats.clone(),
                    None => tenpak::analyze::all_formats(),
                };
            }
            let mut seen = std::collections::HashSet::new();
            formats.retain(|f| seen.insert(f.clone()));
            let opts = tenpak::analyze::AnalyzeOptions {
                formats,
                config,
                filter: a.filter.clone(),
                limit: a.limit,
                chunk_elems: a.chunk_elems,
                tile_vectors: !a.no_tile_vectors,
                out_dir: a.out.clone(),
                no_files: a.no_files,
                plots: a.plots,
            };
            let r = tenpak::analyze::analyze(&a.model, &opts, cx)?;
            if a.json {
                json(out, &r);
            } else {
                out.extend_from_slice(tenpak::analyze::table(&r, a.summary).as_bytes());
                if let Some(d) = &r.out_dir {
                    let _ = writeln!(out, "\nresults: {}", d.display());
                }
            }
            Ok(0)
        }
        Command::Plot(PlotCommand::Staircase(a)) => {
            let mut formats = Vec::new();
            for f in &a.formats {
                if f == "all" {
                    formats.extend(
                        tenpak::config::DEFAULT_FORMATS
                            .iter()
                            .map(|s| s.to_string()),
                    );
                } else {
                    formats.push(f.clone());
                }
            }
            if formats.is_empty() {
                formats = ["bf16", "bfp8", "bfp4", "bfp2", "fp0"]
                    .map(String::from)
                    .to_vec();
            }
            if !(a.max.is_finite() && a.max > 0.0) {
                return Err(Error::config("--max must be a positive number"));
            }
            let o = crate::plot::StaircaseOptions {
                formats,
                rand_samples: a.rand_samples,
                max: a.max,
                seed: a.seed,
            };
            crate::plot::staircase(&a.out, &o)?;
            let _ = writeln!(out, "wrote {}", a.out.display());
            Ok(0)
        }
        Command::Assignment(a) => {
            let ar = tenpak::archive::Archive::open(&a.file)?;
            let i = ar.find(&a.tensor).ok_or_else(|| {
                Error::input(format!("no tensor named '{}'", a.tensor)).with_file(&a.file)
            })?;
            let st = ar.mixed_assignment(i)?.ok_or_else(|| {
                Error::input(format!(
                    "tensor '{}' is not a mixed tensor (no tile assignment)",
                    a.tensor
                ))
                .with_file(&a.file)
            })?;
            let dims = &ar.file.tensors()[i].dims;
            let mapping =
                tenpak::mixed::mapping_json(&a.tensor, dims, &st.formats, st.grid, &st.counts());
            std::fs::create_dir_all(&a.out)
                .map_err(|e| Error::io("create the output folder", e).with_file(&a.out))?;
            let npy = a.out.join("assignment.npy");
            let js = a.out.join("assignment_mapping.json");
            tenpak::atomic::write(
                &npy,
                &tenpak::mixed::npy_u8(st.grid.1, st.grid.0, &st.codes),
            )?;
            tenpak::atomic::write(
                &js,
                (serde_json::to_string_pretty(&mapping).expect("json") + "\n").as_bytes(),
            )?;
            if a.json {
                let mut m = mapping;
                m["assignment"] = serde_json::json!(st.codes);
                json(out, &m);
            } else {
                use std::io::Write as _;
                let _ = writeln!(out, "{}: {} x {} tiles", a.tensor, st.grid.0, st.grid.1);
                for s in tenpak::mixed::shares(&st.formats, &st.counts()) {
                    let _ = writeln!(
                        out,
                        "  {:<6} {:>8} tiles {:>12} bytes",
                        s.format, s.tiles, s.bytes
                    );
                }
                let _ = writeln!(out, "wrote {} and {}", npy.display(), js.display());
            }
            Ok(0)
        }
        Command::Eval(c) => eval::run(c, cli.quiet, cx, out),
        Command::Kv(c) => eval::run_kv(c, cli.quiet, cx, out),
        Command::Calibrate(a) => eval::calibrate(a, cli.quiet, cx, out),
        Command::Sensitivity(a) => eval::sensitivity(a, cli.quiet, cx, out),
        Command::Inspect(a) => {
            let r = tenpak::inspect::inspect(&a.file)?;
            if a.json {
                json(out, &r);
            } else {
                table::inspect(out, &r, a.tensors);
            }
            Ok(0)
        }
        Command::Verify(a) => {
            let r = tenpak::verify::verify(&a.file, cx)?;
            if a.json {
                json(out, &r);
            } else {
                table::verify(out, &r, &a.file);
            }
            Ok(if r.ok() { 0 } else { 1 })
        }
        Command::Decompress(a) => {
            let opts = DecompressOptions {
                dtype: a.dtype,
                filter: a.filter.clone(),
                max_shard_size: a.max_shard_size,
                force: a.force,
                base: a.base.clone(),
                format: a.format,
            };
            let r = tenpak::decompress::decompress(&a.file, &a.output, &opts, cx)?;
            for (t, why) in &r.skipped {
                eprintln!("tenpak: warning: tensor '{t}' skipped: {why}");
            }
            warn(&r.warnings);
            if a.json {
                json(out, &r);
            } else {
                table::decompress(out, &r);
            }
            Ok(0)
        }
        Command::Merge(a) => {
            let opts = tenpak::merge::MergeOptions {
                force: a.force,
                max_shard_size: a.max_shard_size,
            };
            let r = tenpak::merge::merge(&a.parts, &a.output, &opts)?;
            if a.json {
                json(out, &r);
            } else {
                let set = if r.files.len() > 1 {
                    format!(", a set of {} files", r.files.len() - 1)
                } else {
                    String::new()
                };
                let what = if r.parts == 1 {
                    "wrote".to_string()
                } else {
                    format!("merged {} parts,", r.parts)
                };
                let _ = writeln!(
                    out,
                    "{what} {} tensors: {} ({}{set})",
                    r.tensors,
                    r.output.display(),
                    table::human(r.file_bytes)
                );
            }
            Ok(0)
        }
        Command::Completions(a) => {
            use clap::CommandFactory;
            clap_complete::generate(a.shell, &mut Cli::command(), "tenpak", out);
            Ok(0)
        }
        Command::Man(a) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            cmd.build();
            let page = match &a.subcommand {
                None => cmd,
                Some(name) => find_subcommand(&cmd, name).ok_or_else(|| {
                    Error::config(format!(
                        "no subcommand '{name}' (write nested ones with a dash: eval-ppl)"
                    ))
                })?,
            };
            clap_mangen::Man::new(page)
                .render(out)
                .map_err(|e| Error::io("write the man page", e))?;
            Ok(0)
        }
        Command::Codecs(a) => {
            use tenpak::codec::catalog::{self, Use};
            let list = catalog::catalog();
            if a.json {
                json(out, &list);
                return Ok(0);
            }
            let [r, c] = catalog::REFERENCE_SHAPE;
            let _ = writeln!(
                out,
                "bpw: bits per weight of a {r}x{c} f32 matrix (<= an upper bound; lossless: the data's)\n"
            );
            for (u, title) in [
                (Use::Weights, "compress --codec NAME"),
                (Use::Made, "made by options, not typed as --codec"),
                (Use::Kv, "KV caches: tenpak kv"),
            ] {
                let _ = writeln!(out, "{title}:");
                for e in list.iter().filter(|e| e.use_for == u) {
                    let bpw = match (e.bpw, e.bpw_exact) {
                        (Some(b), true) => format!("{b:.2}"),
                        (Some(b), false) => format!("<={b:.2}"),
                        (None, _) if e.lossless => "lossless".into(),
                        (None, _) => "-".into(),
                    };
                    let _ = writeln!(
                        out,
                        "  {:<15} {:>9}  {:<12} {}",
                        e.name, bpw, e.family, e.about
                    );
                }
                let _ = writeln!(out);
            }
            let _ = writeln!(
                out,
                "Options follow a colon (int:bits=4,group=64, zstd:level=19); byte stages follow a + (int4_g32+zstd).\nllama.cpp type names (q4_k, q8_0, ...) are answered with the nearest tenpak codec."
            );
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("5MB").unwrap(), 5_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("0").is_err());
    }
}
