/* photon-eval: held-out loss, perplexity and bits per byte of a checkpoint;
   text samples; and the config.json that Hugging Face transformers needs. */
#define PHOTON_IMPLEMENTATION
#include "cli.h"

static const char *usage =
    "usage: photon-eval --model CKPT [--data FILE...] [options]\n"
    "\n"
    "Evaluates a checkpoint on consecutive windows of the data: mean loss (nats per\n"
    "token), perplexity, and bits per byte (for text read as bytes). Data files are\n"
    "llm.c token shards or text.\n"
    "\n"
    "  --model CKPT         the checkpoint (safetensors)\n"
    "  --state STATE        a client's personalised model: CKPT (the global model) with\n"
    "                       the personal tensors that client state keeps laid over it\n"
    "                       (photon-train --personal)\n"
    "  --data FILE...       evaluation data; every argument up to the next flag\n"
    "  --batch B            windows per forward pass (default 8; does not change the result)\n"
    "  --seq T              tokens per window (default: the model's context length)\n"
    "  --max-tokens N       evaluate at most N predicted tokens (default 0: all; at least one window)\n"
    "  --tokenizer DIR      text is encoded (and samples decoded) with DIR/vocab.json +\n"
    "                       merges.txt instead of bytes; bits per byte stay exact\n"
    "  --json               print results as JSON on stdout\n"
    "  --threads N          CPU threads for the heavy loops (default: one per core;\n"
    "                       results do not change)\n"
    CLI_ACCEPT_UNHASHED_HELP
    CLI_DEVICE_HELP
    "\n"
    "  --sample N           generate N tokens after --prompt and print the text\n"
    "  --prompt TEXT        the text to continue (default: a newline)\n"
    "  --temperature X      sampling temperature, 0 picks the most likely (default 0.8)\n"
    "  --seed S             sampling seed (default 1); sampling runs on the CPU\n"
    "\n"
    "  --hf-config FILE     write the config.json with which transformers'\n"
    "                       GPT2LMHeadModel loads this checkpoint (as model.safetensors)\n"
    "  --hf-export DIR      write a folder that transformers' from_pretrained loads as it\n"
    "                       is: config.json, model.safetensors, a README.md model card\n"
    "                       (rounds, clients, tokens) and, with --tokenizer, the tokenizer\n"
    "                       (vocab.json, merges.txt, tokenizer_config.json for AutoTokenizer);\n"
    "                       DIR must not exist or be empty, and appears complete or not at all\n"
    "  --help, --version\n";

typedef struct eval_options {
    const char *model_path, *state_path, *hf_config, *hf_export, *prompt, *tokenizer;
    const char **data_paths;
    int num_data, json, have_seq;
    cli_device device;
    long long batch, seq, max_tokens, sample;
    double temperature;
    uint64_t seed;
} eval_options;

static void parse_args(eval_options *o, int argc, char **argv) {
    cli_args a;
    memset(o, 0, sizeof *o);
    o->batch = 8;
    o->prompt = "\n";
    o->temperature = 0.8;
    o->seed = 1;
    o->data_paths = (const char **)calloc((size_t)argc + 1, sizeof(char *));
    cli_device_init(&o->device);
    cli_begin(&a, argc, argv);
    while (cli_next(&a)) {
        cli_help_or_version(&a, usage); /* exits if it was one of them */
        if (cli_device_flag(&a, &o->device)) {
            /* --device, --precision */
        } else if (cli_is(&a, "--state")) {
            o->state_path = cli_value(&a);
        } else if (cli_is(&a, "--model")) {
            o->model_path = cli_value(&a);
        } else if (cli_is(&a, "--data")) {
            cli_files(&a, o->data_paths, &o->num_data);
        } else if (cli_is(&a, "--batch")) {
            o->batch = cli_int(&a, 1, 1 << 20);
        } else if (cli_is(&a, "--seq")) {
            o->seq = cli_int(&a, 1, 65536);
            o->have_seq = 1;
        } else if (cli_is(&a, "--max-tokens")) {
            o->max_tokens = cli_int(&a, 0, LLONG_MAX);
        } else if (cli_is(&a, "--json")) {
            cli_no_value(&a);
            o->json = 1;
        } else if (cli_is(&a, "--accept-unhashed")) {
            cli_no_value(&a);
            photon_accept_unhashed(1);
        } else if (cli_is(&a, "--threads")) {
            photon_set_threads((int)cli_int(&a, 1, 64));
        } else if (cli_is(&a, "--sample")) {
            o->sample = cli_int(&a, 0, 1 << 24);
        } else if (cli_is(&a, "--prompt")) {
            o->prompt = cli_value(&a);
        } else if (cli_is(&a, "--temperature")) {
            o->temperature = cli_float(&a, 0.0, 100.0);
        } else if (cli_is(&a, "--seed")) {
            o->seed = (uint64_t)cli_int(&a, 0, LLONG_MAX);
        } else if (cli_is(&a, "--tokenizer")) {
            o->tokenizer = cli_value(&a);
        } else if (cli_is(&a, "--hf-config")) {
            o->hf_config = cli_value(&a);
        } else if (cli_is(&a, "--hf-export")) {
            o->hf_export = cli_value(&a);
        } else if (a.flag[0] == '\0') {
            cli_usage_error("unexpected argument '%s'", argv[a.i]);
        } else {
            cli_usage_error("unknown option %s", a.flag);
        }
    }
    if (!o->model_path) cli_usage_error("--model is required");
    if (o->state_path && o->hf_export)
        cli_usage_error("--hf-export writes the --model file as it is; --state goes with --data and --sample");
    if (o->num_data == 0 && o->sample == 0 && !o->hf_config && !o->hf_export)
        cli_usage_error("nothing to do: give --data, --sample, --hf-config or --hf-export");
    cli_device_resolve(&o->device);
}

static void evaluate(const eval_options *o, photon_model *model, photon_bpe *tok) {
    photon_dataset ds;
    photon_eval_result res;
    photon_error err;
    photon_cuda *gpu;
    int T = o->have_seq ? (int)o->seq : model->config.n_ctx;
    if (T > model->config.n_ctx)
        cli_usage_error("--seq %d is longer than the model's context length %d", T, model->config.n_ctx);
    if (photon_dataset_load_bpe(&ds, o->data_paths, o->num_data, tok, &err) != PHOTON_OK) cli_fail(&err);
    gpu = cli_gpu_open(&o->device, model, NULL, (int)o->batch, T);
    if (cli_evaluate(gpu, model, &ds, (int)o->batch, T, (uint64_t)o->max_tokens, &res, &err) != PHOTON_OK)
        cli_fail(&err);
    cli_gpu_close(gpu, NULL, NULL);
    if (o->json) {
        printf("{\"model\":");
        cli_json_string(stdout, o->model_path);
        printf(",\"step\":%llu,\"loss\":", (unsigned long long)model->step);
        cli_json_number(stdout, res.loss);
        printf(",\"perplexity\":");
        cli_json_number(stdout, res.perplexity);
        printf(",\"bits_per_byte\":");
        cli_json_number(stdout, res.bits_per_byte);
        printf(",\"tokens\":%llu,\"seq\":%d}\n", (unsigned long long)res.tokens, T);
    } else {
        printf("loss %.6f  perplexity %.4f  ", res.loss, res.perplexity);
        if (res.bits_per_byte == res.bits_per_byte) printf("bits/byte %.4f  ", res.bits_per_byte);
        else printf("bits/byte n/a (token shard)  ");
        printf("tokens %llu\n", (unsigned long long)res.tokens);
    }
    photon_dataset_free(&ds);
}

/* Continues the prompt and prints the text: with a tokenizer the prompt is
   encoded and every new token printed as its bytes; without, bytes are tokens. */
static void sample(const eval_options *o, photon_model *model, photon_bpe *tok) {
    size_t n = strlen(o->prompt), i, len;
    int *tokens = (int *)calloc(n + (size_t)o->sample + 1, sizeof(int)), next;
    uint16_t *encoded = (uint16_t *)calloc(n + 1, sizeof(uint16_t));
    uint64_t rng = o->seed;
    photon_error err;
    long long k;
    if (!tokens || !encoded) cli_die("out of memory");
    if (!tok && model->config.vocab_size < 256)
        cli_usage_error("--sample reads the prompt as bytes and needs a vocabulary of at least 256");
    if (n == 0) cli_usage_error("--prompt must not be empty");
    if (tok) {
        if (photon_bpe_encode(tok, o->prompt, n, encoded, &len, &err) != PHOTON_OK) cli_fail(&err);
        for (i = 0; i < len; i++) tokens[i] = encoded[i];
        n = len;
    } else {
        for (i = 0; i < n; i++) tokens[i] = (unsigned char)o->prompt[i];
    }
    fputs(o->prompt, stdout);
    for (k = 0; k < o->sample; k++) {
        if (photon_sample_next(model, tokens, (int)(n + (size_t)k), (float)o->temperature, &rng, &next, &err) != PHOTON_OK)
            cli_fail(&err);
        tokens[n + (size_t)k] = next;
        if (tok) {
            const unsigned char *bytes = photon_bpe_token(tok, next, &len);
            if (bytes) fwrite(bytes, 1, len, stdout);
        } else if (next < 256) {
            putchar(next);
        } else {
            printf("<%d>", next);
        }
        fflush(stdout);
    }
    putchar('\n');
    free(tokens);
    free(encoded);
}

int main(int argc, char **argv) {
    eval_options o;
    photon_model model;
    photon_error err;
    photon_bpe bpe, *tok;
    cli_start("photon-eval");
    parse_args(&o, argc, argv);
    if (o.hf_config) cli_check_output(o.hf_config);
    if (o.hf_export && photon_output_dir_check(o.hf_export, &err) != PHOTON_OK) cli_fail(&err);
    if (photon_checkpoint_load(&model, o.model_path, &err) != PHOTON_OK) cli_fail(&err);
    if (o.state_path) { /* the global backbone with this client's own tensors */
        photon_client_state cs;
        if (photon_client_state_load(&cs, &model.config, o.state_path, &err) != PHOTON_OK) cli_fail(&err);
        if (!cs.personal_values) cli_die("%s keeps no personal tensors (photon-train --personal)", o.state_path);
        if (photon_personal_apply(&cs, &model, &err) != PHOTON_OK) {
            photon_client_state_free(&cs);
            cli_die("%s: %s", o.state_path, err.message);
        }
        photon_client_state_free(&cs);
    }
    tok = cli_tokenizer(o.tokenizer, &bpe, &model.config, o.model_path);
    if (o.num_data > 0) evaluate(&o, &model, tok);
    if (o.sample > 0) sample(&o, &model, tok);
    if (o.hf_export) {
        photon_result r = tok ? photon_bpe_hf_export(tok, o.model_path, o.hf_export, &err)
                              : photon_hf_export(o.model_path, o.hf_export, NULL, 0, -1, &err);
        if (r != PHOTON_OK) cli_fail(&err);
        fprintf(stderr, "%s: wrote %s (from_pretrained loads it)%s\n", cli_prog, o.hf_export,
                tok ? ", with the tokenizer" : "");
    }
    if (tok) photon_bpe_free(tok);
    if (o.hf_config) { /* last: a failure above writes nothing */
        if (photon_write_hf_config(&model.config, o.hf_config, &err) != PHOTON_OK) cli_fail(&err);
        fprintf(stderr, "%s: wrote %s\n", cli_prog, o.hf_config);
    }
    free((void *)o.data_paths);
    photon_model_free(&model);
    return 0;
}
