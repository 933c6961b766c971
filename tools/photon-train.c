/* photon-train: run N local training steps from a new or saved model.

   The model comes from --init (a new GPT-2 style model from a seed) or
   --model CKPT. The optimizer moments and the data position come from
   --state FILE if it exists, and go back there after training, so that the
   next run (or the next federated round) resumes exactly where this stopped.
   The learning-rate schedule reads the global step stored in the checkpoint.

   The outputs commit as one group, the state renamed last: it records the
   SHA-256 of the checkpoint and delta written with it, so that a run
   killed between the renames is finished by the next (which holds the
   state's lock first, then reconciles, then removes what killed runs
   left), and the same command run again after its delta is in place does
   not train a second time. */
#define PHOTON_IMPLEMENTATION
#include "cli.h"

static const char *usage =
    "usage: photon-train (--init [model flags] | --model CKPT) --data FILE... --out CKPT [options]\n"
    "       photon-train --model GLOBAL --data FILE... --delta-out DELTA --client-id ID [options]\n"
    "\n"
    "Trains a GPT-2 style model for --steps local steps and writes the checkpoint.\n"
    "Data files are llm.c token shards or text (read as bytes, vocab 256).\n"
    "\n"
    "model:\n"
    "  --init               start from a new model (with the flags below)\n"
    "  --vocab N            vocabulary size (default 256)\n"
    "  --ctx N              context length (default 128)\n"
    "  --layers N           transformer blocks (default 4)\n"
    "  --heads N            attention heads (default 4)\n"
    "  --width N            embedding width, a multiple of --heads (default 128)\n"
    "  --seed N             initialisation seed (default 1)\n"
    "  --model CKPT         start from a checkpoint instead\n"
    "\n"
    "training:\n"
    "  --data FILE...       training data; every argument up to the next flag (not\n"
    "                       needed with --steps 0)\n"
    "  --tokenizer DIR      encode text with DIR/vocab.json + merges.txt (photon-data\n"
    "                       train-tokenizer) instead of bytes; --init then defaults\n"
    "                       --vocab to the tokenizer's size\n"
    "  --steps N            local optimizer steps (default 100; 0 writes the model as it is)\n"
    "  --time-budget S      train as many steps as fit in S seconds: at least one, at most\n"
    "                       --steps (a slow silo does less work; its delta records the steps\n"
    "                       and tokens it did, and the merge weighs it by them). The step\n"
    "                       count then depends on the machine; without it, training is\n"
    "                       bit-for-bit deterministic\n"
    "  --batch B            rows per batch (default 8)\n"
    "  --seq T              tokens per row, at most the context length (default min(64, ctx))\n"
    "  --lr X               peak learning rate (default 1e-3)\n"
    "  --warmup N           linear warmup steps (default 0: the first step uses the full rate)\n"
    "  --total-steps N      global step where the cosine decay ends (default: the\n"
    "                       global step this run ends at)\n"
    "  --min-lr-frac X      floor of the decay as a fraction of --lr (default 0.1)\n"
    "  --beta1 X --beta2 X  AdamW moment decay rates (default 0.9, 0.95)\n"
    "  --eps X              AdamW epsilon (default 1e-8)\n"
    "  --weight-decay X     decoupled weight decay on matrices and embeddings (default 0.1)\n"
    "  --grad-clip X        maximum global gradient norm, 0 disables (default 1.0)\n"
    "\n"
    "files:\n"
    "  --out CKPT           where to write the trained checkpoint (safetensors)\n"
    "  --state FILE         client state (AdamW moments, data position): read if it\n"
    "                       exists, written after training. One process at a time:\n"
    "                       a second on the same FILE is refused (FILE.lock). A run\n"
    "                       killed while committing its outputs is finished by the\n"
    "                       next run on FILE, and what killed runs left beside the\n"
    "                       outputs (*.<pid>.pending, *.<pid>.tmp) is removed\n"
    "  --reset-optimizer    start from zero AdamW moments (the data position is kept)\n"
    "\n"
    "federated rounds:\n"
    "  --delta-out DELTA    write this round's delta (the --model weights minus the\n"
    "                       trained weights) for photon-merge; needs --model\n"
    "  --delta-format F     f32 (default), bf16, int8 or int4: int8 is about 26% of the\n"
    "                       f32 size, int4 about 13% (blocks of 128 values with one\n"
    "                       scale each; docs/FORMAT.md). With --state, what the format\n"
    "                       drops is kept there (error feedback, never sent) and added\n"
    "                       to the next round's delta before it is encoded\n"
    "  --no-error-feedback  encode each delta alone; the state keeps no residual\n"
    "  --personal PATTERN   keep the tensors this glob names to this client (repeat it, or\n"
    "                       comma-separate; '*' any run, '?' one character; e.g. 'h.*.ln_*'\n"
    "                       or 'h.3.*'): they are absent from the delta, kept in --state\n"
    "                       (needed) and laid over each new --model before training, so\n"
    "                       the client trains and evaluates (photon-eval --state) its\n"
    "                       own version of them; the merge leaves the global ones alone\n"
    "  --client-id ID       this client's name in the delta (letters, digits, . _ -)\n"
    "                       With --state: if FILE's last commit wrote the delta now at\n"
    "                       DELTA against this same --model, the round is done: a note,\n"
    "                       exit 0, nothing trained or written (so a client killed and\n"
    "                       restarted can rerun the same command; --json says\n"
    "                       \"already_done\": true)\n"
    "\n"
    "output:\n"
    "  --log-every N        progress line on stderr every N steps (default: about 20 lines)\n"
    "  --json               print a summary as JSON on stdout\n"
    "  --threads N          CPU threads for the heavy loops (default: one per core;\n"
    "                       results do not change)\n"
    CLI_ACCEPT_UNHASHED_HELP
    CLI_DEVICE_HELP
    "  --help, --version\n";

typedef struct train_options {
    int init, json, log_every;
    photon_config config;
    uint64_t seed;
    const char *model_path, *out_path, *state_path, *delta_path, *client_id;
    int reset_optimizer, have_vocab, no_error_feedback, have_format;
    photon_delta_format delta_format;
    const char *tokenizer;
    char personal[256];  /* --personal, comma-joined */
    const char **data_paths;
    int num_data;
    long long steps, batch, seq, warmup, total_steps;
    double time_budget; /* seconds; 0: none */
    int have_seq, have_total, have_config;
    cli_device device;
    photon_adamw_config adamw;
    float lr, min_lr_frac;
} train_options;

static void parse_args(train_options *o, int argc, char **argv) {
    cli_args a;
    memset(o, 0, sizeof *o);
    o->config.vocab_size = 256;
    o->config.n_ctx = 128;
    o->config.n_layer = 4;
    o->config.n_head = 4;
    o->config.n_embd = 128;
    o->seed = 1;
    o->steps = 100;
    o->batch = 8;
    o->lr = 1e-3f;
    o->min_lr_frac = 0.1f;
    o->adamw.beta1 = 0.9f;
    o->adamw.beta2 = 0.95f;
    o->adamw.eps = 1e-8f;
    o->adamw.weight_decay = 0.1f;
    o->adamw.grad_clip = 1.0f;
    o->data_paths = (const char **)calloc((size_t)argc + 1, sizeof(char *));
    cli_device_init(&o->device);
    cli_begin(&a, argc, argv);
    while (cli_next(&a)) {
        cli_help_or_version(&a, usage); /* exits if it was one of them */
        if (cli_device_flag(&a, &o->device)) {
            /* --device, --precision */
        } else if (cli_is(&a, "--time-budget")) {
            o->time_budget = cli_float(&a, 1e-3, 1e9);
        } else if (cli_is(&a, "--init")) {
            cli_no_value(&a);
            o->init = 1;
        } else if (cli_is(&a, "--vocab")) {
            o->config.vocab_size = (int)cli_int(&a, 1, 65536);
            o->have_config = o->have_vocab = 1;
        } else if (cli_is(&a, "--ctx")) {
            o->config.n_ctx = (int)cli_int(&a, 1, 65536);
            o->have_config = 1;
        } else if (cli_is(&a, "--layers")) {
            o->config.n_layer = (int)cli_int(&a, 1, 1000);
            o->have_config = 1;
        } else if (cli_is(&a, "--heads")) {
            o->config.n_head = (int)cli_int(&a, 1, 65536);
            o->have_config = 1;
        } else if (cli_is(&a, "--width")) {
            o->config.n_embd = (int)cli_int(&a, 1, 65536);
            o->have_config = 1;
        } else if (cli_is(&a, "--seed")) {
            o->seed = (uint64_t)cli_int(&a, 0, LLONG_MAX);
            o->have_config = 1;
        } else if (cli_is(&a, "--model")) {
            o->model_path = cli_value(&a);
        } else if (cli_is(&a, "--data")) {
            cli_files(&a, o->data_paths, &o->num_data);
        } else if (cli_is(&a, "--steps")) {
            o->steps = cli_int(&a, 0, LLONG_MAX / 2);
        } else if (cli_is(&a, "--batch")) {
            o->batch = cli_int(&a, 1, 1 << 20);
        } else if (cli_is(&a, "--seq")) {
            o->seq = cli_int(&a, 1, 65536);
            o->have_seq = 1;
        } else if (cli_is(&a, "--lr")) {
            o->lr = (float)cli_float(&a, 0.0, 10.0);
        } else if (cli_is(&a, "--warmup")) {
            o->warmup = cli_int(&a, 0, LLONG_MAX / 2);
        } else if (cli_is(&a, "--total-steps")) {
            o->total_steps = cli_int(&a, 1, LLONG_MAX / 2);
            o->have_total = 1;
        } else if (cli_is(&a, "--min-lr-frac")) {
            o->min_lr_frac = (float)cli_float(&a, 0.0, 1.0);
        } else if (cli_is(&a, "--beta1")) {
            o->adamw.beta1 = (float)cli_float(&a, 0.0, 0.999999);
        } else if (cli_is(&a, "--beta2")) {
            o->adamw.beta2 = (float)cli_float(&a, 0.0, 0.999999);
        } else if (cli_is(&a, "--eps")) {
            o->adamw.eps = (float)cli_float(&a, 1e-30, 1.0);
        } else if (cli_is(&a, "--weight-decay")) {
            o->adamw.weight_decay = (float)cli_float(&a, 0.0, 10.0);
        } else if (cli_is(&a, "--grad-clip")) {
            o->adamw.grad_clip = (float)cli_float(&a, 0.0, 1e30);
        } else if (cli_is(&a, "--out")) {
            o->out_path = cli_value(&a);
        } else if (cli_is(&a, "--state")) {
            o->state_path = cli_value(&a);
        } else if (cli_is(&a, "--tokenizer")) {
            o->tokenizer = cli_value(&a);
        } else if (cli_is(&a, "--reset-optimizer")) {
            cli_no_value(&a);
            o->reset_optimizer = 1;
        } else if (cli_is(&a, "--delta-format")) {
            const char *v = cli_value(&a);
            int f = photon_delta_format_parse(v);
            if (f < 0) cli_usage_error("--delta-format must be f32, bf16, int8 or int4, got '%s'", v);
            o->delta_format = (photon_delta_format)f;
            o->have_format = 1;
        } else if (cli_is(&a, "--no-error-feedback")) {
            cli_no_value(&a);
            o->no_error_feedback = 1;
        } else if (cli_is(&a, "--personal")) {
            const char *v = cli_value(&a);
            size_t n = strlen(o->personal);
            if (n + strlen(v) + 2 > sizeof o->personal) cli_usage_error("--personal: the patterns pass 255 characters");
            snprintf(o->personal + n, sizeof o->personal - n, "%s%s", n ? "," : "", v);
        } else if (cli_is(&a, "--delta-out")) {
            o->delta_path = cli_value(&a);
        } else if (cli_is(&a, "--client-id")) {
            o->client_id = cli_value(&a);
        } else if (cli_is(&a, "--log-every")) {
            o->log_every = (int)cli_int(&a, 1, INT_MAX);
        } else if (cli_is(&a, "--json")) {
            cli_no_value(&a);
            o->json = 1;
        } else if (cli_is(&a, "--accept-unhashed")) {
            cli_no_value(&a);
            photon_accept_unhashed(1);
        } else if (cli_is(&a, "--threads")) {
            photon_set_threads((int)cli_int(&a, 1, 64));
        } else if (a.flag[0] == '\0') {
            cli_usage_error("unexpected argument '%s'", argv[a.i]);
        } else {
            cli_usage_error("unknown option %s", a.flag);
        }
    }
    if (o->init == (o->model_path != NULL)) cli_usage_error("give exactly one of --init and --model");
    if (o->model_path && o->have_config) cli_usage_error("model flags (--vocab, --layers, ...) go with --init, not --model");
    if (o->num_data == 0 && o->steps > 0) cli_usage_error("--data is required (only --steps 0 goes without)");
    if (!o->out_path && !o->delta_path) cli_usage_error("--out or --delta-out is required");
    if (o->delta_path && !o->model_path) cli_usage_error("--delta-out needs --model: a delta is taken against a checkpoint");
    if (o->delta_path && !o->client_id) cli_usage_error("--delta-out needs --client-id");
    if (o->client_id && !o->delta_path) cli_usage_error("--client-id goes with --delta-out");
    if ((o->have_format || o->no_error_feedback) && !o->delta_path)
        cli_usage_error("--delta-format and --no-error-feedback go with --delta-out");
    if (o->delta_path && o->steps == 0) cli_usage_error("--delta-out needs at least one step");
    if (o->personal[0] && !o->state_path) cli_usage_error("--personal needs --state: the personal tensors are kept there");
    if (o->client_id && !photon_client_id_valid(o->client_id))
        cli_usage_error("--client-id must be 1 to 63 letters, digits, '.', '_' or '-'");
    cli_device_resolve(&o->device);
}

/* Before any work on a state: the lock, then a commit that a killed run
   left halfway, then what killed runs left beside each output. */
static void recover(const train_options *o, photon_lock *lock) {
    photon_error err;
    photon_recovery rec;
    const char *targets[3];
    int k, removed = 0;
    uint64_t bytes = 0;
    targets[0] = o->out_path, targets[1] = o->delta_path, targets[2] = o->state_path;
    lock->fd = -1;
    if (o->state_path) {
        if (photon_lock_acquire(lock, o->state_path, &err) != PHOTON_OK) cli_fail(&err);
        if (photon_client_state_reconcile(o->state_path, &rec, &err) != PHOTON_OK) cli_fail(&err);
        if (rec.pid)
            fprintf(stderr, "%s: note: finished the commit that a killed run (pid %ld) left: %s now belongs to %s\n",
                    cli_prog, rec.pid, o->state_path, rec.commit.delta[0] ? rec.commit.delta : rec.commit.out);
    }
    for (k = 0; k < 3; k++)
        if (targets[k] && photon_outputs_cleanup(targets[k], &removed, &bytes, &err) != PHOTON_OK) cli_fail(&err);
    if (removed)
        fprintf(stderr, "%s: note: removed %d file%s (%.1f MB) that killed runs left beside the outputs\n", cli_prog,
                removed, removed == 1 ? "" : "s", (double)bytes / 1e6);
}

/* PHOTON_TRAIN_FAULT=rename:K (docs/TESTING.md): the commit stops before
   its K-th rename, as a crash there would. */
static int fault_rename(void) {
    const char *v = getenv("PHOTON_TRAIN_FAULT");
    char *end;
    long k;
    if (!v || !*v) return 0;
    k = strncmp(v, "rename:", 7) == 0 ? strtol(v + 7, &end, 10) : 0;
    if (k < 1 || k > PHOTON_OUTPUTS_MAX || *end) cli_die("PHOTON_TRAIN_FAULT must be rename:K (K from 1), got '%s'", v);
    return (int)k;
}

/* Whether the round is done already: the state's last commit wrote the
   delta now at --delta-out, against this --model (training again would
   count this round's data twice). Prints the note and the JSON, and exits. */
static void exit_if_done(const train_options *o, const photon_model *model) {
    photon_commit_record c;
    photon_delta_info info;
    photon_config config;
    photon_error err;
    char hex[65];
    if (!o->state_path || !o->delta_path || access(o->state_path, F_OK) != 0 || access(o->delta_path, F_OK) != 0) return;
    if (photon_client_state_read_commit(o->state_path, &c, &err) != PHOTON_OK) cli_fail(&err);
    if (strcmp(c.base_sha256, model->file_sha256) != 0 || !c.delta_sha256[0]) return;
    if (photon_sha256_file(o->delta_path, hex, &err) != PHOTON_OK) cli_fail(&err);
    if (strcmp(hex, c.delta_sha256) != 0) return;
    if (photon_delta_read_info(o->delta_path, &info, &config, &err) != PHOTON_OK) cli_fail(&err);
    fprintf(stderr, "%s: note: %s already holds this state's delta against %s (%llu steps); nothing to train\n",
            cli_prog, o->delta_path, o->model_path, (unsigned long long)info.local_steps);
    if (o->json) {
        printf("{\"out\":null,\"delta\":");
        cli_json_string(stdout, o->delta_path);
        printf(",\"already_done\":true,\"steps\":%llu,\"tokens\":%llu}\n", (unsigned long long)info.local_steps,
               (unsigned long long)info.tokens);
    }
    exit(0);
}

/* Writes the round's delta in its format. With --state and without
   --no-error-feedback the state's residual (what earlier rounds' encoding
   dropped) goes into this delta and takes what this one drops; an f32
   delta takes it all, and the state keeps none. */
static photon_result save_delta(const train_options *o, const photon_model *model, const float *base_params,
                                const photon_delta_info *info, photon_client_state *state, const char *path,
                                photon_error *err) {
    int feedback = o->state_path && !o->no_error_feedback;
    photon_result r;
    if (feedback && info->format != PHOTON_DELTA_F32 && !state->residual) {
        state->residual = (float *)calloc(model->num_params, sizeof(float));
        if (!state->residual) {
            err->code = PHOTON_ERR_MEMORY;
            snprintf(err->message, sizeof err->message, "%s: out of memory for the error-feedback residual", path);
            return err->code;
        }
    }
    r = photon_delta_save_as(model, base_params, info, feedback ? state->residual : NULL, path, err);
    if (!feedback || info->format == PHOTON_DELTA_F32) {
        free(state->residual);
        state->residual = NULL;
    }
    return r;
}

/* The state's record of this commit: the hash of each output's temporary,
   the very bytes the commit renames into place. */
static void record_commit(const train_options *o, photon_client_state *state, const char *base_sha256,
                          const char *out_temp, const char *delta_temp) {
    photon_commit_record *c = &state->commit;
    photon_error err;
    if (o->out_path) {
        snprintf(c->out, sizeof c->out, "%s", o->out_path);
        if (photon_sha256_file(out_temp, c->out_sha256, &err) != PHOTON_OK) cli_fail(&err);
    }
    if (o->delta_path) {
        snprintf(c->delta, sizeof c->delta, "%s", o->delta_path);
        snprintf(c->base_sha256, sizeof c->base_sha256, "%s", base_sha256);
        if (photon_sha256_file(delta_temp, c->delta_sha256, &err) != PHOTON_OK) cli_fail(&err);
    }
}

/* Picks up the client state if there is one (else a fresh one), with the
   loader where it stopped. */
static void open_state(const train_options *o, const photon_model *model, const photon_dataset *ds,
                       photon_client_state *state, photon_loader *loader) {
    photon_error err;
    int resumed;
    if (photon_client_state_resume(state, model, ds, loader, o->state_path, &resumed, &err) != PHOTON_OK) cli_fail(&err);
    if (resumed && state->step != model->step)
        fprintf(stderr, "%s: note: %s was written at global step %llu, the model is at step %llu\n", cli_prog,
                o->state_path, (unsigned long long)state->step, (unsigned long long)model->step);
    if (o->reset_optimizer) photon_adamw_state_reset(&state->adamw); /* a fresh optimizer; the data goes on */
}

/* The client's own tensors over the global model, before training: the
   state's, or (a first round) the global's own values to start from. */
static void lay_personal(const train_options *o, const photon_client_state *state, photon_model *model) {
    photon_error err;
    if (state->personal_values && !o->personal[0])
        cli_die("%s keeps personal tensors (%s): give --personal %s to go on with them, or another --state",
                o->state_path, state->personal, state->personal);
    if (!o->personal[0]) return;
    {
        unsigned char *mask = (unsigned char *)calloc((size_t)model->num_tensors, 1);
        if (!mask) cli_die("out of memory");
        if (photon_personal_mask(model, o->personal, mask, &err) != PHOTON_OK) cli_usage_error("--personal: %s", err.message);
        free(mask);
    }
    if (!state->personal_values) return;
    if (strcmp(state->personal, o->personal) != 0)
        cli_die("%s keeps personal tensors '%s'; --personal gives '%s' (personalise the same tensors, or use another "
                "--state)", o->state_path, state->personal, o->personal);
    if (photon_personal_apply(state, model, &err) != PHOTON_OK) cli_fail(&err);
}

static void log_step(const train_options *o, long long done, const photon_model *model, const photon_step_stats *st,
                     double elapsed) {
    double tok_per_s = elapsed > 0 ? (double)done * o->batch * o->seq / elapsed : 0.0;
    double left = done > 0 ? elapsed / (double)done * (double)(o->steps - done) : 0.0;
    fprintf(stderr, "step %lld/%lld (global %llu) | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | %.1fs left\n", done,
            o->steps, (unsigned long long)model->step, st->loss, st->lr, st->grad_norm, tok_per_s, left);
}

int main(int argc, char **argv) {
    train_options o;
    photon_model model;
    photon_dataset ds;
    photon_loader loader;
    photon_client_state state;
    photon_schedule schedule;
    photon_step_stats st;
    photon_error err;
    photon_bpe bpe;
    photon_cuda *gpu = NULL;
    int *inputs, *targets;
    float *base_params = NULL;
    char base_sha256[65];
    photon_outputs outputs;
    photon_lock lock;
    const char *out_temp = NULL, *delta_temp = NULL, *state_temp = NULL;
    long long s, done = 0;
    double start, elapsed, loss_sum = 0.0;
    cli_start("photon-train");
    parse_args(&o, argc, argv);
    memset(&state, 0, sizeof state);
    memset(&st, 0, sizeof st);
    recover(&o, &lock);

    /* the outputs appear together, or not at all; their places are checked before any work; the state
       goes last, as the group's record */
    photon_outputs_init(&outputs);
    outputs.stop_before_rename = fault_rename();
    if ((o.out_path && photon_outputs_add(&outputs, o.out_path, &out_temp, &err) != PHOTON_OK) ||
        (o.delta_path && photon_outputs_add(&outputs, o.delta_path, &delta_temp, &err) != PHOTON_OK) ||
        (o.state_path && photon_outputs_add(&outputs, o.state_path, &state_temp, &err) != PHOTON_OK))
        cli_fail(&err);
    if (o.init && o.tokenizer) { /* the vocabulary comes from the tokenizer */
        photon_error e;
        if (photon_bpe_load_dir(&bpe, o.tokenizer, &e) != PHOTON_OK) cli_fail(&e);
        if (o.have_vocab && o.config.vocab_size != bpe.vocab_size)
            cli_usage_error("--vocab %d differs from the %d tokens of --tokenizer %s", o.config.vocab_size,
                            bpe.vocab_size, o.tokenizer);
        o.config.vocab_size = bpe.vocab_size;
        photon_bpe_free(&bpe);
    }
    if (o.init) {
        if (photon_model_init(&model, &o.config, o.seed, &err) != PHOTON_OK) cli_usage_error("%s", err.message);
    } else if (photon_checkpoint_load(&model, o.model_path, &err) != PHOTON_OK) {
        cli_fail(&err);
    }
    if (!o.init) exit_if_done(&o, &model);
    if (!o.have_seq) o.seq = model.config.n_ctx < 64 ? model.config.n_ctx : 64;
    if (o.seq > model.config.n_ctx)
        cli_usage_error("--seq %lld is longer than the model's context length %d", o.seq, model.config.n_ctx);
    memset(&ds, 0, sizeof ds);
    memset(&loader, 0, sizeof loader);
    if (o.num_data > 0) {
        photon_bpe *tok = cli_tokenizer(o.tokenizer, &bpe, &model.config, o.init ? "the new model" : o.model_path);
        if (photon_dataset_load_bpe(&ds, o.data_paths, o.num_data, tok, &err) != PHOTON_OK) cli_fail(&err);
        if (tok) photon_bpe_free(tok);
        if (photon_dataset_check_vocab(&ds, model.config.vocab_size, &err) != PHOTON_OK) cli_fail(&err);
        if (photon_loader_init(&loader, &ds, (int)o.batch, (int)o.seq, &err) != PHOTON_OK) cli_fail(&err);
        open_state(&o, &model, &ds, &state, &loader);
    } else if (o.state_path) {
        cli_usage_error("--state needs --data: the state records the position in the data");
    }
    if (o.delta_path) { /* keep the global weights: the delta is taken against them */
        memcpy(base_sha256, model.file_sha256, sizeof base_sha256); /* hashed as it was loaded */
        base_params = (float *)malloc(model.num_params * sizeof(float));
        if (!base_params) cli_die("out of memory");
        memcpy(base_params, model.params, model.num_params * sizeof(float));
    }
    if (o.num_data > 0) lay_personal(&o, &state, &model); /* after the copy: the delta leaves these out */

    schedule.peak_lr = o.lr;
    schedule.warmup_steps = (uint64_t)o.warmup;
    schedule.total_steps = o.have_total ? (uint64_t)o.total_steps : model.step + (uint64_t)o.steps;
    schedule.min_lr_frac = o.min_lr_frac;
    if (!o.log_every) o.log_every = o.steps > 20 ? (int)(o.steps / 20) : 1;

    inputs = (int *)calloc((size_t)(o.batch * o.seq), sizeof(int));
    targets = (int *)calloc((size_t)(o.batch * o.seq), sizeof(int));
    if (!inputs || !targets) cli_die("out of memory");
    fprintf(stderr, "%s: %.2fM parameters, %zu data tokens, %lld steps of %lld x %lld tokens from global step %llu\n",
            cli_prog, model.num_params / 1e6, ds.num_tokens, o.steps, o.batch, o.seq, (unsigned long long)model.step);
    if (o.steps > 0) gpu = cli_gpu_open(&o.device, &model, &state.adamw, (int)o.batch, (int)o.seq);
    start = cli_now();
    for (s = 1; s <= o.steps; s++) {
        double used;
        photon_loader_next(&loader, inputs, targets);
        if (cli_train_step(gpu, &model, &state.adamw, &o.adamw, &schedule, inputs, targets, (int)o.batch, (int)o.seq,
                           &st, &err) != PHOTON_OK)
            cli_fail(&err);
        loss_sum += st.loss;
        done = s;
        used = cli_now() - start;
        if (s % o.log_every == 0 || s == o.steps) log_step(&o, s, &model, &st, used);
        if (o.time_budget > 0 && s < o.steps && used + used / (double)s > o.time_budget) { /* the next would not fit */
            fprintf(stderr, "%s: %lld of %lld steps fit in the time budget of %g s\n", cli_prog, done, o.steps,
                    o.time_budget);
            break;
        }
    }
    cli_gpu_close(gpu, &model, &state.adamw); /* the weights and moments come back to the host */
    elapsed = cli_now() - start;

    {   /* each output goes to its temporary name; the commit renames them all */
        photon_result r = PHOTON_OK;
        if (o.out_path) r = photon_checkpoint_save(&model, out_temp, &err);
        if (r == PHOTON_OK && o.delta_path) {
            photon_delta_info info;
            memset(&info, 0, sizeof info);
            memcpy(info.base_sha256, base_sha256, sizeof base_sha256);
            info.round = model.round + 1;
            snprintf(info.client, sizeof info.client, "%s", o.client_id);
            info.local_steps = (uint64_t)done;
            info.batch = (uint64_t)o.batch;
            info.seq = (uint64_t)o.seq;
            info.tokens = (uint64_t)(done * o.batch * o.seq);
            info.loss = st.loss;
            info.format = o.delta_format;
            snprintf(info.personal, sizeof info.personal, "%s", o.personal);
            r = save_delta(&o, &model, base_params, &info, &state, delta_temp, &err);
        }
        if (r == PHOTON_OK && o.state_path && o.personal[0]) r = photon_personal_keep(&state, &model, o.personal, &err);
        if (r == PHOTON_OK && o.state_path) {
            photon_client_state_record(&state, &model, &ds, &loader);
            record_commit(&o, &state, base_sha256, out_temp, delta_temp);
            r = photon_client_state_save(&state, &model.config, state_temp, &err);
        }
        if (r == PHOTON_OK) r = photon_outputs_commit(&outputs, &err);
        if (r != PHOTON_OK) {
            photon_outputs_abort(&outputs);
            cli_fail(&err);
        }
        free(base_params);
    }
    fprintf(stderr, "%s: wrote %s (global step %llu)%s%s\n", cli_prog, o.out_path ? o.out_path : o.delta_path,
            (unsigned long long)model.step, o.state_path ? " and " : "", o.state_path ? o.state_path : "");
    if (o.json) {
        printf("{\"out\":");
        if (o.out_path) cli_json_string(stdout, o.out_path);
        else printf("null");
        printf(",\"delta\":");
        if (o.delta_path) cli_json_string(stdout, o.delta_path);
        else printf("null");
        printf(",\"already_done\":false,\"steps\":%lld,\"global_step\":%llu,\"tokens_seen\":%llu,\"tokens\":%lld,\"final_loss\":", done,
               (unsigned long long)model.step, (unsigned long long)model.tokens_seen, done * o.batch * o.seq);
        cli_json_number(stdout, done ? st.loss : NAN);
        printf(",\"mean_loss\":");
        cli_json_number(stdout, done ? loss_sum / (double)done : NAN);
        printf(",\"seconds\":%.3f,\"tokens_per_second\":", elapsed);
        cli_json_number(stdout, elapsed > 0 ? (double)(done * o.batch * o.seq) / elapsed : NAN);
        printf(",\"data_epoch\":%llu,\"data_position\":%llu,\"device\":\"%s\"}\n", (unsigned long long)loader.epoch,
               (unsigned long long)loader.position, o.device.use_cuda ? "cuda" : "cpu");
    }
    free(inputs);
    free(targets);
    free((void *)o.data_paths);
    photon_client_state_free(&state);
    photon_dataset_free(&ds);
    photon_model_free(&model);
    photon_lock_release(&lock);
    return 0;
}
