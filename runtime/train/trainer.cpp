#include "runtime/train/trainer.h"

#include "runtime/comm/comm.h"
#include "runtime/cpu/gemm_check.h"
#include "runtime/data/shards.h"
#include "runtime/program/aligned_buffer.h"
#include "runtime/train/checkpoint_dir.h"
#include "runtime/train/distributed.h"
#include "runtime/observe/metrics.h"
#include "runtime/observe/plot.h"
#include "runtime/program/param_store.h"
#include "runtime/program/partition.h"
#include "runtime/program/program_check.h"
#include "runtime/program/rng.h"
#include "runtime/train/run_lock.h"
#include "runtime/train/schedule.h"
#include "runtime/train/session.h"
#include "runtime/train/zero_optimizer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace llamart::train {

namespace fs = std::filesystem;
using observe::MetricsLog;
using observe::plot_run;
using observe::Progress;
using observe::RollbackRecord;
using observe::SkipRecord;

bool has_split(const std::string &dir, const std::string &split) {
  std::error_code ec;
  const std::string prefix = split + "_";
  for (const auto &entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && name.size() > 4 &&
        name.compare(name.size() - 4, 4, ".tok") == 0)
      return true;
  }
  return false;
}

namespace {

// A run that keeps diverging from the same checkpoint stops instead of
// rolling back forever (each rollback consumes fresh data, so a loop would
// run through the dataset without making progress).
constexpr int64_t kMaxRollbacksToOneCheckpoint = 3;

// SIGINT / SIGTERM (Ctrl-C, Slurm preemption) ask the loop to stop after the
// current update and write a checkpoint, instead of losing the work since the
// last one. A second signal kills the process the default way, so an impatient
// Ctrl-C Ctrl-C still works.
std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal.exchange(sig) != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

class StopSignalGuard {
public:
  StopSignalGuard() {
    g_stop_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignalGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

private:
  struct sigaction old_int_ {}, old_term_ {};
};

void warn(const std::string &message) {
  std::fprintf(stderr, "warning: %s\n", message.c_str());
  std::fflush(stderr);
}

} // namespace

void validate_train_options(const TrainOptions &o) {
  auto bad = [](const std::string &m) { throw std::runtime_error(m); };
  if (o.data_dir.empty())
    bad("--data: required (a directory of train_*.tok shards)");
  if (o.steps < 1)
    bad("--steps: must be >= 1, got " + std::to_string(o.steps));
  if (o.checkpoint_every < 0)
    bad("--checkpoint-every: must be >= 0");
  if (o.keep_last < 0)
    bad("--keep-last: must be >= 0");
  if (o.eval_every < 0)
    bad("--eval-every: must be >= 0");
  if (o.eval_batches < 1)
    bad("--eval-batches: must be >= 1");
  if (o.grad_accum < 1)
    bad("--grad-accum: must be >= 1, got " + std::to_string(o.grad_accum));
  if (!std::isfinite(o.grad_clip))
    bad("--grad-clip: must be finite");
  if (o.verify_gemm_every < 0)
    bad("--verify-gemm-every: must be >= 0 (0 = off), got " +
        std::to_string(o.verify_gemm_every));
  if (o.stop_at < 0 || o.stop_at > o.steps)
    bad("--stop-at: must be in [0, --steps], got " + std::to_string(o.stop_at));
  o.adamw.validate();
  o.spike.validate();
  std::error_code ec;
  if (!fs::is_directory(o.data_dir, ec))
    bad("--data: " + o.data_dir + " is not a directory");
  if (!has_split(o.data_dir, "train"))
    bad("--data: " + o.data_dir + " holds no train_*.tok shards");
  LrSchedule schedule;
  schedule.peak_lr = o.lr;
  schedule.min_lr_ratio = o.min_lr_ratio;
  schedule.warmup_steps = o.warmup >= 0 ? o.warmup : default_warmup_steps(o.steps);
  schedule.total_steps = o.steps;
  schedule.validate();
}

namespace {

// Settings a resumed run takes from its flags that differ from the
// checkpoint's: legitimate (extending a run), but worth a line in the log
// because the result then differs from an uninterrupted run.
void warn_changed_settings(const TrainState &saved, const TrainState &now) {
  std::ostringstream changed;
  auto cmp = [&](const char *flag, double a, double b) {
    if (a != b)
      changed << " " << flag << " " << a << " -> " << b;
  };
  cmp("--steps", saved.schedule.total_steps, now.schedule.total_steps);
  cmp("--lr", saved.schedule.peak_lr, now.schedule.peak_lr);
  cmp("--min-lr-ratio", saved.schedule.min_lr_ratio, now.schedule.min_lr_ratio);
  cmp("--warmup", saved.schedule.warmup_steps, now.schedule.warmup_steps);
  cmp("--beta1", saved.adamw.beta1, now.adamw.beta1);
  cmp("--beta2", saved.adamw.beta2, now.adamw.beta2);
  cmp("--eps", saved.adamw.eps, now.adamw.eps);
  cmp("--weight-decay", saved.adamw.weight_decay, now.adamw.weight_decay);
  cmp("--grad-clip", saved.grad_clip, now.grad_clip);
  cmp("--grad-accum", saved.grad_accum, now.grad_accum);
  const SpikeConfig &a = saved.anomaly.config(), &b = now.anomaly.config();
  cmp("--spike-window", a.window, b.window);
  cmp("--spike-zscore", a.zscore, b.zscore);
  cmp("--max-skips-before-rollback", a.max_skips_before_rollback,
      b.max_skips_before_rollback);
  if (!changed.str().empty())
    warn("resuming with settings that differ from the checkpoint:" + changed.str());
}

// On a dp x tp grid every rank runs a Trainer: the same data stream, the same
// decisions (agreed through distributed.h), its own slice of the model and
// its ZeRO-1 shard of the optimizer. World rank 0 alone talks to the file
// system (run lock, checkpoints, metrics.jsonl) and to the user.
template <typename T> class Trainer {
public:
  Trainer(const ProgramInfo &program, const TrainOptions &options)
      : program_(program), options_(options), grid_(grid_place(program)),
        numel_(program.param_numel),
        tokens_per_update_(options.grad_accum * program.global_batch * program.seq_len),
        batch_first_(static_cast<int64_t>(grid_.dp_rank) * program.batch),
        optimizer_(program, grid_.dp_rank, grid_.tp_rank),
        params_(static_cast<size_t>(optimizer_.shard().padded_numel)),
        session_(open_step_session<T>(program, params_.data(), optimizer_)),
        tokens_(static_cast<size_t>(program.batch * program.seq_len)),
        targets_(static_cast<size_t>(program.batch * program.seq_len)) {
    if (grid_.partitioned)
      full_view_ = std::make_unique<FullProgramView>(program);
  }

  TrainResult run();

private:
  void restore_or_init();
  void init_weights();
  TrainState load_state(const std::string &dir);
  std::optional<CheckpointRef> share(std::optional<CheckpointRef> ref, const char *what);
  void quarantine(const std::vector<CheckpointRef> &rejected);
  void rollback(int64_t step);
  void note(const std::string &message) const;
  void write_plot() const;
  double elapsed_s() const;
  // One update, as run() reads it: step -> judge -> apply -> log.
  struct Update {
    int64_t step;
    data::Dataset::Position batch_position; // where its first batch began
    double loss, grad_norm;                 // agreed over the grid
    int64_t gemm_failures;                  // of the (re)computation kept
    std::chrono::steady_clock::time_point start;
  };
  Update step_update(int64_t step);
  Verdict judge(const Update &u);
  void apply(const Update &u, double lr);
  bool log_update(const Update &u, const Verdict &verdict, double lr, TrainResult &result);
  double compute_update();
  double compute_checked_update(int64_t step, data::Dataset::Position batch_position,
                                int64_t &gemm_failures);
  double evaluate();
  std::string save();
  TrainState current_state() const;

  const ProgramInfo &program_;
  const TrainOptions &options_;
  const GridPlace grid_;
  const int64_t numel_;
  const int64_t tokens_per_update_; // over the whole grid
  // This dp rank's sequences within a global batch (the data stream is the
  // single-rank run's with batch = global_batch).
  const int64_t batch_first_;
  // params_ and the optimizer's moments are what checkpoints save and load:
  // the session's own state on the host, its host copies on a device
  // (session.h).
  ZeroAdamW<T> optimizer_;
  AlignedBuffer<T> params_;
  std::unique_ptr<StepSession<T>> session_;
  AlignedBuffer<int32_t> tokens_, targets_; // this dp rank's part of a batch
  // Partitioned programs: the full model as checkpoints hold it.
  std::unique_ptr<FullProgramView> full_view_;

  std::string checkpoint_root_;
  TrainState state_;
  Rng rng_;
  std::unique_ptr<data::Dataset> train_data_, val_data_;
  std::unique_ptr<Progress> progress_;
  std::unique_ptr<MetricsLog> metrics_; // world rank 0 only
  std::chrono::steady_clock::time_point run_start_;
  double elapsed_before_ = 0.0; // wall time of earlier runs (from state.json)
};

// Warnings come from world rank 0 alone: the other ranks see the same things.
template <typename T> void Trainer<T>::note(const std::string &message) const {
  if (grid_.root())
    warn(message);
}

// Rank 0's decision about a checkpoint, on every rank.
template <typename T>
std::optional<CheckpointRef> Trainer<T>::share(std::optional<CheckpointRef> ref,
                                               const char *what) {
  if (!grid_.partitioned)
    return ref;
  int64_t step = ref ? ref->step : -1;
  broadcast_from_root(grid_, &step, sizeof step, what);
  const std::string path = broadcast_from_root(grid_, ref ? ref->path : "", what);
  if (step < 0)
    return std::nullopt;
  return CheckpointRef{step, path};
}

// Params and AdamW moments from a checkpoint. Checkpoints hold the full model
// (checkpoint_dir.h), so a partitioned rank reads it all and keeps its tp
// slice of every tensor and its dp shard of the moments: a run resumes on any
// grid.
template <typename T> TrainState Trainer<T>::load_state(const std::string &dir) {
  if (!grid_.partitioned)
    return load_checkpoint<T>(program_, dir, params_.data(), optimizer_.exp_avg(),
                              optimizer_.exp_avg_sq());
  const ProgramInfo &full = full_view_->program();
  const size_t full_n = static_cast<size_t>(full.param_numel);
  AlignedBuffer<T> full_params(full_n), full_m(full_n), full_v(full_n);
  const TrainState state = load_checkpoint<T>(full, dir, full_params.data(),
                                              full_m.data(), full_v.data());
  slice_params(program_, *full_view_, grid_.tp_rank, full_params.data(), params_.data());
  AlignedBuffer<T> local_m(params_.size()), local_v(params_.size());
  slice_params(program_, *full_view_, grid_.tp_rank, full_m.data(), local_m.data());
  slice_params(program_, *full_view_, grid_.tp_rank, full_v.data(), local_v.data());
  optimizer_.set_moments(local_m.data(), local_v.data());
  return state;
}

template <typename T> void Trainer<T>::restore_or_init() {
  checkpoint_root_ = (fs::path(options_.run_dir) / "checkpoints").string();

  TrainState wanted;
  wanted.seed = options_.seed;
  wanted.shuffle = options_.shuffle;
  wanted.schedule.peak_lr = options_.lr;
  wanted.schedule.min_lr_ratio = options_.min_lr_ratio;
  wanted.schedule.total_steps = options_.steps;
  wanted.schedule.warmup_steps = options_.warmup >= 0
                                     ? options_.warmup
                                     : default_warmup_steps(options_.steps);
  wanted.schedule.validate();
  wanted.adamw = options_.adamw;
  wanted.grad_clip = options_.grad_clip;
  wanted.grad_accum = options_.grad_accum;
  wanted.anomaly = AnomalyDetector(options_.spike);

  // The run lock is held, so whatever interrupted writes left is dead.
  std::error_code ec;
  if (grid_.root() && fs::is_directory(checkpoint_root_, ec))
    if (const int n = clean_interrupted_saves(checkpoint_root_))
      progress_->message("removed " + std::to_string(n) + " leftover" +
                         (n == 1 ? "" : "s") + " of interrupted checkpoint writes in " +
                         checkpoint_root_);

  if (options_.resume) {
    std::optional<CheckpointRef> ref;
    if (grid_.root()) {
      std::vector<CheckpointRef> rejected;
      ref = find_resume_checkpoint(checkpoint_root_, warn, INT64_MAX, &rejected);
      quarantine(rejected);
    }
    ref = share(ref, "the checkpoint to resume from");
    if (ref) {
      TrainState saved = load_state(ref->path);
      if (grid_.root())
        warn_changed_settings(saved, wanted);
      if (saved.seed != options_.seed || saved.shuffle != options_.shuffle)
        note("resuming keeps the checkpoint's data order (seed " +
             std::to_string(saved.seed) + (saved.shuffle ? "" : ", no shuffle") +
             "); --seed / --no-shuffle apply to new runs only");
      // The data stream and counters continue; hyperparameters follow flags.
      state_ = wanted;
      state_.seed = saved.seed;
      state_.shuffle = saved.shuffle;
      state_.step = saved.step;
      state_.data_epoch = saved.data_epoch;
      state_.data_index = saved.data_index;
      state_.rng = saved.rng;
      state_.elapsed_s = saved.elapsed_s;
      state_.last_loss = saved.last_loss;
      state_.tokens_seen = saved.tokens_seen;
      state_.optimizer_updates = saved.optimizer_updates;
      state_.attempts = saved.attempts;
      state_.skipped_nonfinite = saved.skipped_nonfinite;
      state_.skipped_spike = saved.skipped_spike;
      state_.rollbacks = saved.rollbacks;
      state_.last_rollback_target = saved.last_rollback_target;
      state_.rollbacks_to_target = saved.rollbacks_to_target;
      state_.anomaly = saved.anomaly.with_config(options_.spike);
      rng_.set_state(saved.rng);
      elapsed_before_ = saved.elapsed_s;
      progress_->message("resumed from " + ref->path + " at step " +
                         std::to_string(saved.step));
      return;
    }
    progress_->message("no checkpoint in " + checkpoint_root_ +
                       "; starting from scratch");
  } else if (grid_.root() && !list_checkpoints(checkpoint_root_).empty()) {
    throw std::runtime_error(
        "--run-dir: " + options_.run_dir +
        " already holds checkpoints; pass --resume to continue that run or "
        "choose another --run-dir");
  }

  state_ = wanted;
  rng_.reseed(derive_seed(options_.seed, "llamart.train"));
  state_.rng = rng_.state();
  init_weights();
}

// Fresh weights: init_params, or --init-from-checkpoint. A partitioned rank
// builds the full model the single-rank program would start from (init is
// keyed by (seed, name) and the full shape) and keeps its slice, so every
// grid starts from the same point.
template <typename T> void Trainer<T>::init_weights() {
  if (!grid_.partitioned) {
    init_params(program_, options_.seed, params_.data());
    if (!options_.init_from_checkpoint.empty()) {
      const std::string loaded = load_model_weights<T>(
          program_, options_.init_from_checkpoint, params_.data(), warn);
      progress_->message("initialized weights from " + loaded);
    }
    return;
  }
  const ProgramInfo &full = full_view_->program();
  AlignedBuffer<T> full_params(static_cast<size_t>(full.param_numel));
  init_params(full, options_.seed, full_params.data());
  if (!options_.init_from_checkpoint.empty()) {
    // Rank 0 resolves what the path names (the newest checkpoint that
    // verifies, ...) and the others read exactly that file.
    std::string loaded;
    if (grid_.root())
      loaded = load_model_weights<T>(full, options_.init_from_checkpoint,
                                     full_params.data(), warn);
    loaded = broadcast_from_root(grid_, loaded, "the --init-from-checkpoint weights");
    if (!grid_.root())
      load_model_weights<T>(full, loaded, full_params.data(),
                            [](const std::string &) {});
    progress_->message("initialized weights from " + loaded);
  }
  slice_params(program_, *full_view_, grid_.tp_rank, full_params.data(), params_.data());
}

// All micro-steps of one update, each on the next batch: the session holds
// their summed gradients; returns the mean loss. Every rank advances over the
// whole global batch and reads only its dp rank's part.
template <typename T> double Trainer<T>::compute_update() {
  const int64_t n = options_.grad_accum;
  double loss_sum = 0.0;
  for (int64_t a = 0; a < n; ++a) {
    train_data_->next_batch(program_.global_batch, batch_first_, program_.batch,
                            tokens_.data(), targets_.data());
    loss_sum += session_->micro_step(tokens_.data(), targets_.data(),
                                     /*accumulate=*/a > 0, /*last=*/a == n - 1);
  }
  return loss_sum * (1.0 / static_cast<double>(n));
}

// compute_update under ABFT checks (every K-th update, and one that has a
// bitflip injected). A GEMM whose checksum fails means the gradients cannot
// be trusted; a transient fault (a particle strike, a marginal core under
// load) does not repeat, so the update is recomputed once from the same
// batch: the train step is deterministic, so a clean retry gives exactly the
// update an unfaulted run would have made. `gemm_failures` is left at the
// retry's count: nonzero means both computations failed. On a grid the
// counts are the largest over all ranks: every rank retries, or none does.
template <typename T>
double Trainer<T>::compute_checked_update(int64_t step,
                                          data::Dataset::Position batch_position,
                                          int64_t &gemm_failures) {
  const std::vector<FaultKind> faults = faults_at(options_.faults, state_.attempts);
  const bool inject =
      std::find(faults.begin(), faults.end(), FaultKind::BitFlip) != faults.end();
  // An injected bitflip forces a check only when checks are on at all: with
  // --verify-gemm-every 0 the corruption stays silent, as it would in a run
  // without ABFT (which is how the tests show that it is real).
  const bool verify = options_.verify_gemm_every > 0 &&
                      (inject || step % options_.verify_gemm_every == 0);
  gemm_failures = 0;
  if (!verify && !inject)
    return compute_update();
  double loss = 0.0;
  for (int pass = 0; pass < 2; ++pass) {
    // The fault is transient: the retry runs clean.
    const bool flip = inject && pass == 0;
    const uint64_t flip_seed = derive_seed(state_.seed, "llamart.bitflip") ^
                               static_cast<uint64_t>(state_.attempts);
    session_->gemm_check_begin(verify, flip, flip_seed);
    loss = compute_update();
    const cpu::GemmCheckStats stats = session_->gemm_check_end();
    if (inject && pass == 0 && !stats.bitflip_delivered)
      note("--inject bitflip@" + std::to_string(state_.attempts) +
           ": the update ran too few GEMMs; nothing was flipped");
    gemm_failures = agree_max(grid_, stats.failed, "ABFT GEMM failure count");
    if (!verify || gemm_failures == 0 || pass == 1)
      break;
    SkipRecord r{};
    r.step = step;
    r.reason = skip_reason_name(SkipReason::GemmChecksum);
    r.loss = loss;
    r.grad_norm = session_->reduce_gradients(1.0 / options_.grad_accum);
    r.lr = state_.schedule.at(step);
    r.loss_z = r.grad_norm_z = NAN;
    r.attempt = state_.attempts;
    r.data_epoch = batch_position.epoch;
    r.data_index = batch_position.index;
    r.elapsed_s = elapsed_s();
    r.gemm_failures = gemm_failures;
    r.recomputed = true;
    if (metrics_)
      metrics_->log_skip(r);
    note("step " + std::to_string(step) + ": " + std::to_string(gemm_failures) +
         " of " + std::to_string(stats.checked) +
         " GEMMs failed their checksum; recomputing the update on the same batch");
    train_data_->set_position(batch_position);
  }
  return loss;
}

// Mean loss over the first eval_batches batches of the val split (fewer when
// it is smaller), always the same batches so evaluations are comparable.
// Forward only (eval_loss), in its own, smaller arena. Batches are global
// batches, sliced over dp like the training ones.
template <typename T> double Trainer<T>::evaluate() {
  const int64_t available = static_cast<int64_t>(val_data_->num_windows()) /
                            program_.global_batch;
  const int64_t batches = std::max<int64_t>(1, std::min(options_.eval_batches, available));
  val_data_->set_position({0, 0});
  double sum = 0.0;
  for (int64_t b = 0; b < batches; ++b) {
    val_data_->next_batch(program_.global_batch, batch_first_, program_.batch,
                          tokens_.data(), targets_.data());
    sum += session_->eval_loss(tokens_.data(), targets_.data());
  }
  return sum / static_cast<double>(batches);
}

template <typename T> double Trainer<T>::elapsed_s() const {
  return elapsed_before_ + std::chrono::duration<double>(
                               std::chrono::steady_clock::now() - run_start_)
                               .count();
}

template <typename T> TrainState Trainer<T>::current_state() const {
  TrainState s = state_;
  const data::Dataset::Position pos = train_data_->position();
  s.data_epoch = pos.epoch;
  s.data_index = pos.index;
  s.rng = rng_.state();
  s.elapsed_s = elapsed_s();
  return s;
}

// Returns the checkpoint directory (on world rank 0; empty elsewhere).
// Partitioned: the moments are gathered over dp onto dp rank 0, then the tp
// slices of the dp-rank-0 group onto world rank 0, which writes the
// single-rank format.
template <typename T> std::string Trainer<T>::save() {
  session_->pull_state();
  if (!grid_.partitioned)
    return save_checkpoint<T>(program_, checkpoint_root_, current_state(),
                              params_.data(), optimizer_.exp_avg(),
                              optimizer_.exp_avg_sq(), options_.keep_last);
  // Streamed, one tensor at a time, onto world rank 0 (the only rank that
  // writes and that ever holds a whole tensor): a weight from its tp slices;
  // a moment (and a device's sharded fp32 weights) first from the ZeRO-1
  // shards that hold its parts (onto dp rank 0), then from its tp slices.
  // Every rank walks the same tensor order (checkpoint_tensor_order); rank 0
  // holds one full and one local tensor at a time, not the model.
  const ProgramInfo &full = full_view_->program();
  const bool dp_root = grid_.dp_rank == 0;
  int64_t largest_local = 0, largest_full = 0;
  for (int32_t p = 0; p < program_.num_params; ++p) {
    largest_local = std::max(largest_local, program_.params[p].numel);
    largest_full = std::max(largest_full, full.params[p].numel);
  }
  AlignedBuffer<T> local(static_cast<size_t>(dp_root ? largest_local : 0)),
      whole(static_cast<size_t>(grid_.root() ? largest_full : 0));
  const DpShard &shard = optimizer_.shard();
  // A device that keeps the fp32 masters of its shard alone (bf16 on a dp
  // grid) has the weights sharded like the moments; otherwise every dp rank
  // holds all of its local weights.
  const bool sharded_weights = session_->shards_params();
  auto gather_one = [&](const CheckpointTensor &t) -> const T * {
    const ParamInfo &info = program_.params[t.param];
    const T *slice = params_.data() + info.offset;
    // This rank's shard, in shard coordinates (the moments), or in the flat
    // buffer (a device's sharded weights: from_device put the pieces there).
    const T *sharded = t.kind == 1 ? optimizer_.exp_avg()
                       : t.kind == 2 ? optimizer_.exp_avg_sq()
                                     : nullptr;
    if (sharded || sharded_weights) {
      // This tensor's elements [offset, offset + numel) of the flat local
      // buffer, as the dp ranks' pieces of each gradient bucket split them
      // (partition.h): within a bucket, rank after rank in flat order.
      for (const RangePart &part : split_range(shard, info.offset, info.offset + info.numel)) {
        const T *mine = sharded ? sharded + part.mine_shard : params_.data() + part.mine;
        comm::gather_varying(mine, dp_root ? local.data() + (part.flat - info.offset) : nullptr,
                             part.counts.data(), /*root=*/0, comm::Axis::DP, info.name);
      }
      slice = local.data();
    }
    if (!dp_root)
      return nullptr;
    if (effective_shard_dim(program_, info) < 0)
      return slice; // whole on every tp rank: world rank 0's copy
    const SliceGeometry g = slice_geometry(program_, info);
    comm::gather(slice, grid_.root() ? whole.data() : nullptr, g.outer, g.chunk,
                 /*root=*/0, comm::Axis::TP, info.name);
    return whole.data();
  };
  if (!grid_.root()) {
    for (const CheckpointTensor &t : checkpoint_tensor_order(full))
      gather_one(t);
    return std::string();
  }
  return save_checkpoint<T>(full, checkpoint_root_, current_state(),
                            CheckpointTensorSource<T>(gather_one), options_.keep_last);
}

// Checkpoints that failed verification are moved out of the step_N namespace:
// left in place, a corrupt checkpoint newer than the one training continues
// from would be counted by keep-last rotation (which would then delete good
// ones) and be re-verified on every resume.
template <typename T>
void Trainer<T>::quarantine(const std::vector<CheckpointRef> &rejected) {
  if (!grid_.root())
    return; // the checkpoint directory is rank 0's
  for (const CheckpointRef &c : rejected)
    warn("moved " + c.path + " to " + quarantine_checkpoint(c) +
         " (kept for inspection; delete it when done)");
}

// Called when the detector reports a full burst at update `step`: the run
// state returns to the newest intact checkpoint from before the burst's first
// skip, the data stream stays where it is (PaLM's recipe: restart about a
// hundred steps before the spike and skip the batches in between), and the
// checkpoints of the abandoned stretch are deleted so that a crash cannot
// resume into it.
template <typename T> void Trainer<T>::rollback(int64_t step) {
  const int64_t first = state_.anomaly.burst_first_step();
  const int64_t skips = state_.anomaly.burst_skips();
  const std::string burst = "step " + std::to_string(step) + ": " +
                            std::to_string(skips) + " updates skipped since step " +
                            std::to_string(first);
  std::optional<CheckpointRef> ref;
  if (grid_.root()) {
    std::vector<CheckpointRef> rejected;
    try {
      ref = find_resume_checkpoint(checkpoint_root_, warn, first, &rejected);
    } catch (const std::runtime_error &e) {
      quarantine(rejected);
      throw std::runtime_error(burst + " and " + e.what() +
                               ": training is unstable (lower --lr)");
    }
    quarantine(rejected);
  }
  ref = share(ref, "the checkpoint to roll back to");
  if (!ref)
    throw std::runtime_error(
        burst + " and " + checkpoint_root_ + " holds no checkpoint before step " +
        std::to_string(first) +
        " to roll back to: training is unstable (lower --lr; --checkpoint-every "
        "keeps checkpoints to roll back to)");
  if (ref->step == state_.last_rollback_target) {
    ++state_.rollbacks_to_target;
  } else {
    state_.last_rollback_target = ref->step;
    state_.rollbacks_to_target = 1;
  }
  if (state_.rollbacks_to_target > kMaxRollbacksToOneCheckpoint)
    throw std::runtime_error(
        burst + " after " + std::to_string(kMaxRollbacksToOneCheckpoint) +
        " rollbacks to " + ref->path +
        ": training diverges from there whatever the data (lower --lr)");

  const data::Dataset::Position position = train_data_->position();
  const TrainState saved = load_state(ref->path);
  session_->push_state();
  // Rank 0 deletes only checkpoints newer than the one the others may still
  // be reading.
  const std::vector<CheckpointRef> discarded =
      grid_.root() ? discard_checkpoints_after(checkpoint_root_, ref->step)
                   : std::vector<CheckpointRef>();
  // What the checkpoint restores; the data position, the attempt and token
  // counts, the totals and the wall clock keep going.
  state_.step = saved.step;
  state_.optimizer_updates = saved.optimizer_updates;
  state_.last_loss = saved.last_loss;
  state_.rng = saved.rng;
  rng_.set_state(saved.rng);
  state_.anomaly = saved.anomaly.with_config(options_.spike);
  state_.anomaly.end_burst();
  ++state_.rollbacks;
  if (!grid_.root())
    return;

  RollbackRecord r{};
  r.step = step;
  r.to_step = saved.step;
  r.checkpoint = ref->path;
  r.checkpoint_epoch = saved.data_epoch;
  r.checkpoint_index = saved.data_index;
  r.data_epoch = position.epoch;
  r.data_index = position.index;
  r.discarded_checkpoints = static_cast<int64_t>(discarded.size());
  r.elapsed_s = elapsed_s();
  metrics_->log_rollback(r);
  warn(burst + "; rolled back to " + ref->path + " (step " +
       std::to_string(saved.step) + "), discarding " +
       std::to_string(discarded.size()) +
       " newer checkpoint(s); data continues at epoch " +
       std::to_string(position.epoch) + ", index " + std::to_string(position.index) +
       ", skipping the batches since the checkpoint (epoch " +
       std::to_string(saved.data_epoch) + ", index " +
       std::to_string(saved.data_index) + ")");
}

// The update's gradients and loss: the micro-steps (under ABFT when due),
// injected faults, then the reduction over the grid with the global norm.
// Every rank returns rank 0's loss and norm, on which the verdict is taken.
template <typename T> typename Trainer<T>::Update Trainer<T>::step_update(int64_t step) {
  Update u{};
  u.step = step;
  u.start = std::chrono::steady_clock::now();
  u.batch_position = train_data_->position();
  ++state_.attempts;
  double loss = compute_checked_update(step, u.batch_position, u.gemm_failures);
  const std::vector<FaultKind> faults = faults_at(options_.faults, state_.attempts);
  if (!faults.empty())
    session_->edit_gradients([&](T *grads) {
      for (const FaultKind fault : faults)
        apply_fault(fault, grads, numel_, loss);
    });
  double grad_norm =
      session_->reduce_gradients(1.0 / static_cast<double>(options_.grad_accum));
  // The verdict steers every rank: all judge rank 0's numbers (the loss and
  // the norm can differ in the last bit between ranks).
  double judged[2] = {loss, grad_norm};
  broadcast_from_root(grid_, judged, sizeof judged, "loss and gradient norm");
  u.loss = judged[0];
  u.grad_norm = judged[1];
  return u;
}

// Corrupted twice: judged like a non-finite update (skipped, counted, part of
// a burst that rolls back), whatever its loss looks like.
template <typename T> Verdict Trainer<T>::judge(const Update &u) {
  if (u.gemm_failures > 0) {
    Verdict verdict;
    verdict.reason = SkipReason::GemmChecksum;
    return verdict;
  }
  return state_.anomaly.judge(u.loss, u.grad_norm);
}

template <typename T> void Trainer<T>::apply(const Update &u, double lr) {
  // Bias correction counts applied updates (TrainState::optimizer_updates).
  ++state_.optimizer_updates;
  const double inv_accum = 1.0 / static_cast<double>(options_.grad_accum);
  const double scale = inv_accum * clip_scale(u.grad_norm, options_.grad_clip);
  session_->adamw(options_.adamw, state_.optimizer_updates, lr, scale);
}

// Counts the update, tells the spike detector, and records it: a step line
// and metrics.jsonl entry, or the skip. Returns whether the detector's burst
// is full (the caller rolls back).
template <typename T>
bool Trainer<T>::log_update(const Update &u, const Verdict &verdict, double lr,
                            TrainResult &result) {
  const int64_t step = u.step;
  const double loss = u.loss, grad_norm = u.grad_norm;
  const double step_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - u.start).count();
  const bool applied = verdict.reason == SkipReason::None;
  state_.step = step;
  state_.tokens_seen += tokens_per_update_;
  const bool burst_full = state_.anomaly.record(step, loss, grad_norm, verdict);
  if (applied) {
    state_.last_loss = loss;
    const double tokens_per_s =
        step_s > 0 ? static_cast<double>(tokens_per_update_) / step_s : 0.0;
    if (metrics_)
      metrics_->log_step(step, loss, lr, grad_norm, tokens_per_s, elapsed_s());
    progress_->update(step, loss, lr, tokens_per_s);
    result.final_train_loss = loss;
    return burst_full;
  }
  // A twice-corrupted update counts with the non-finite ones (state.json
  // keeps two counters; both mean "values that cannot be trusted").
  ++(verdict.reason == SkipReason::Spike ? state_.skipped_spike : state_.skipped_nonfinite);
  SkipRecord r{};
  r.step = step;
  r.reason = skip_reason_name(verdict.reason);
  r.loss = loss;
  r.grad_norm = grad_norm;
  r.lr = lr;
  r.loss_z = verdict.loss_z;
  r.grad_norm_z = verdict.grad_norm_z;
  r.attempt = state_.attempts;
  r.data_epoch = u.batch_position.epoch;
  r.data_index = u.batch_position.index;
  r.elapsed_s = elapsed_s();
  if (verdict.reason == SkipReason::GemmChecksum)
    r.gemm_failures = u.gemm_failures;
  if (metrics_)
    metrics_->log_skip(r);
  char line[320];
  std::snprintf(line, sizeof line,
                "step %" PRId64 ": update skipped (%s: loss %.6g, grad norm %.6g, "
                "z-scores %.3g / %.3g); its batch began at epoch %" PRIu64
                ", index %" PRIu64,
                step, r.reason, loss, grad_norm, verdict.loss_z, verdict.grad_norm_z,
                u.batch_position.epoch, u.batch_position.index);
  note(line);
  return burst_full;
}

template <typename T> TrainResult Trainer<T>::run() {
  const int64_t end_step = options_.stop_at > 0 ? options_.stop_at : options_.steps;
  const bool quiet = options_.quiet || !grid_.root();
  // The progress object exists before restore so resume notes go through it.
  progress_ = std::make_unique<Progress>(0, end_step, quiet);
  std::optional<RunDirLock> lock;
  if (grid_.root()) {
    std::error_code ec;
    fs::create_directories(options_.run_dir, ec);
    if (ec)
      throw std::runtime_error("--run-dir: cannot create " + options_.run_dir +
                               ": " + ec.message());
    lock.emplace(options_.run_dir);
  }
  restore_or_init();
  session_->push_state();
  if (const std::string where = session_->describe(); !where.empty())
    progress_->message(where);
  const int64_t start_step = state_.step;
  progress_ = std::make_unique<Progress>(start_step, end_step, quiet);

  if (grid_.root())
    metrics_ = std::make_unique<MetricsLog>(
        (fs::path(options_.run_dir) / "metrics.jsonl").string(),
        options_.tensorboard ? (fs::path(options_.run_dir) / "tensorboard").string() : "");

  train_data_ = std::make_unique<data::Dataset>(
      options_.data_dir, "train", program_.seq_len,
      static_cast<uint64_t>(program_.vocab_size), state_.seed, state_.shuffle);
  if (train_data_->num_windows() == 0)
    throw std::runtime_error("--data: " + options_.data_dir +
                             ": the train split has no window of seq_len + 1 = " +
                             std::to_string(program_.seq_len + 1) + " tokens");
  train_data_->set_position({state_.data_epoch, state_.data_index});
  if (has_split(options_.data_dir, "val")) {
    val_data_ = std::make_unique<data::Dataset>(
        options_.data_dir, "val", program_.seq_len,
        static_cast<uint64_t>(program_.vocab_size), state_.seed, false);
    if (val_data_->num_windows() == 0) {
      note(options_.data_dir + ": the val split has no window of seq_len + 1 "
                               "tokens; evaluation is off");
      val_data_.reset();
    }
  }

  {
    char grid[200] = "";
    if (grid_.partitioned)
      std::snprintf(grid, sizeof grid,
                    ", dp=%d x tp=%d%s; per rank %" PRId64 " params, %" PRId64
                    " sequences, AdamW state for %" PRId64,
                    program_.grid_dp, program_.grid_tp,
                    program_.sequence_parallel ? " (sequence parallel)" : "",
                    program_.param_numel, program_.batch, optimizer_.shard().size);
    char line[768];
    std::snprintf(line, sizeof line,
                  "model %s (%s%s): %" PRId64 " params | %" PRId64 " x %" PRId64
                  " tokens x %" PRId64 " accum = %" PRId64
                  " tokens/update | %" PRIu64 " train windows | updates %" PRId64
                  " -> %" PRId64 " of %" PRId64 " | warmup %" PRId64 " | lr %.3g",
                  program_.model_name, dtype_name(program_.dtype), grid,
                  grid_.partitioned ? program_.full_param_numel : program_.param_numel,
                  program_.global_batch,
                  program_.seq_len, options_.grad_accum, tokens_per_update_,
                  train_data_->num_windows(), start_step, end_step,
                  options_.steps, state_.schedule.warmup_steps, options_.lr);
    progress_->message(line);
  }

  const LrSchedule &schedule = state_.schedule;
  run_start_ = std::chrono::steady_clock::now();
  StopSignalGuard signal_guard;
  TrainResult result;
  result.step = start_step;
  result.final_train_loss = state_.last_loss;
  int64_t last_eval_step = -1;
  double last_eval_loss = 0.0;
  const int64_t skipped_before = state_.skipped_nonfinite + state_.skipped_spike;
  const int64_t rollbacks_before = state_.rollbacks;

  // A rollback moves state_.step back, so the loop runs until the step
  // counter reaches the end, not over a fixed range.
  while (state_.step < end_step) {
    const int64_t step = state_.step + 1;
    const Update update = step_update(step);
    const Verdict verdict = judge(update);
    const double lr = schedule.at(step);
    if (verdict.reason == SkipReason::None)
      apply(update, lr);
    const bool burst_full = log_update(update, verdict, lr, result);
    if (burst_full)
      rollback(step);
    result.step = state_.step;

    // A signal can reach the ranks of a job at different moments; all stop
    // after the same update (and write one checkpoint together).
    const int stop = static_cast<int>(agree_max(grid_, g_stop_signal.load(), "stop signal"));
    // After a rollback the run is back at a checkpointed, evaluated step;
    // only a stop request saves it (with the data position moved on).
    if (!burst_full && val_data_ && options_.eval_every > 0 &&
        step % options_.eval_every == 0) {
      last_eval_loss = evaluate();
      last_eval_step = step;
      if (metrics_)
        metrics_->log_eval(step, last_eval_loss);
      char line[128];
      std::snprintf(line, sizeof line, "step %" PRId64 ": val loss %.4f", step,
                    last_eval_loss);
      progress_->message(line);
    }
    if ((!burst_full && ((options_.checkpoint_every > 0 &&
                          step % options_.checkpoint_every == 0) ||
                         step == end_step)) ||
        stop) {
      const std::string dir = save();
      progress_->message("checkpoint " + dir);
    }
    if (stop) {
      progress_->finish();
      if (grid_.root())
        std::fprintf(stderr, "stopped by signal %d after step %" PRId64
                             "; resume with --resume\n", stop, state_.step);
      result.stop_signal = stop;
      write_plot();
      return result;
    }
  }
  progress_->finish();

  if (start_step >= end_step)
    progress_->message("already at step " + std::to_string(start_step) +
                       "; nothing to train");
  const int64_t skipped =
      state_.skipped_nonfinite + state_.skipped_spike - skipped_before;
  if (skipped > 0 || state_.rollbacks > rollbacks_before)
    progress_->message(
        "this run skipped " + std::to_string(skipped) + " update(s) and rolled back " +
        std::to_string(state_.rollbacks - rollbacks_before) + " time(s); whole run: " +
        std::to_string(state_.skipped_nonfinite) + " non-finite, " +
        std::to_string(state_.skipped_spike) + " spikes, " +
        std::to_string(state_.rollbacks) + " rollbacks (metrics.jsonl has each)");
  result.step = state_.step;
  result.final_train_loss = state_.last_loss;
  if (std::isfinite(result.final_train_loss) && grid_.root())
    std::printf("final train loss: %.6f\n", result.final_train_loss);
  if (val_data_) {
    const double val = last_eval_step == state_.step ? last_eval_loss : evaluate();
    if (last_eval_step != state_.step && state_.step > start_step && metrics_)
      metrics_->log_eval(state_.step, val);
    result.final_val_loss = val;
    if (grid_.root())
      std::printf("final val loss: %.6f\n", val);
  }
  std::fflush(stdout);
  write_plot();
  return result;
}

// metrics.png of the whole run so far (plot.h). A picture is a convenience:
// failing to draw it warns and never fails a run that trained fine.
template <typename T> void Trainer<T>::write_plot() const {
  if (!metrics_)
    return; // world rank 0 alone writes the run dir
  const std::string png = (fs::path(options_.run_dir) / "metrics.png").string();
  try {
    plot_run(options_.run_dir, png);
  } catch (const std::exception &e) {
    note(png + ": not written: " + e.what());
  }
}

} // namespace

TrainResult train(const ProgramInfo &program, const TrainOptions &options) {
  validate_program(program);
  validate_train_options(options);
  if (program.open_device) {
    // What the device path does not do (yet): say so before anything runs.
    const std::string target = program.target ? program.target : "device";
    if (program.dtype != DType::F32)
      throw std::runtime_error("a " + target + " program trains in fp32 storage only");
  }
  if (program.dtype == DType::F64)
    return Trainer<double>(program, options).run();
  return Trainer<float>(program, options).run();
}

} // namespace llamart::train
