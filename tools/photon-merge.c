/* photon-merge: the aggregator's side of a federated round.

   Averages the clients' deltas (weighted by the tokens each trained on), or
   combines them by a robust rule, applies an outer optimizer to the global
   checkpoint, and writes the next global checkpoint with an audit trail;
   --verify recomputes a merge and confirms an existing checkpoint bit for
   bit. */
#define PHOTON_IMPLEMENTATION
#include "cli.h"

static const char *usage =
    "usage: photon-merge --base GLOBAL --out NEXT [options] DELTA...\n"
    "       photon-merge --base GLOBAL --verify NEXT [options] DELTA...\n"
    "       photon-merge --base GLOBAL --check [bounds] DELTA...\n"
    "       photon-merge --inspect DELTA...\n"
    "       photon-merge --base GLOBAL --apply UPDATE --out NEXT\n"
    "       photon-merge --base GLOBAL --delta-out GROUP --group-id ID [options] DELTA...\n"
    "\n"
    "Merges client deltas (from photon-train --delta-out, in any --delta-format,\n"
    "mixed as they come) into the next global checkpoint. Every file is read once: its payload hash (photon.data_sha256) is\n"
    "checked as it loads. Deltas are checked against the base (hash, round, config,\n"
    "tensors), for repeated client ids, NaN/Inf, tokens that are not local steps x\n"
    "batch x sequence, counters that would overflow, and the bounds below, and are\n"
    "merged in client-id order.\n"
    "\n"
    "  --base GLOBAL        the checkpoint every client started this round from\n"
    "  --out NEXT           where to write the next global checkpoint\n"
    "  --verify NEXT        recompute the merge and check NEXT is identical (writes nothing)\n"
    "  --delta-out GROUP    a federation of federations: write this sub-federation's\n"
    "                       group delta instead of a checkpoint: its members' aggregate\n"
    "                       against GLOBAL, weighing the sum of their tokens, its audit\n"
    "                       trail listing them. A parent merge takes it like a client's\n"
    "                       delta (two levels of token-weighted means equal the flat mean\n"
    "                       up to float rounding: docs/ALGORITHM.md, \"Federations of\n"
    "                       federations\"). Needs --group-id; fedavg at lr 1 only (outer\n"
    "                       optimizers run at the root); --verify GROUP --group-id ID\n"
    "                       re-checks one\n"
    "  --group-id ID        the group delta's client id at the parent (letters, digits, . _ -)\n"
    "  --personal PATTERN   declare tensors (globs, repeat or comma-separate) that every\n"
    "                       member keeps to itself (photon-train --personal): a delta that\n"
    "                       carries one is refused; they stay as GLOBAL has them. Without\n"
    "                       it, deltas that leave out tensors (their own --personal) are\n"
    "                       averaged tensor by tensor over the deltas that carry each, and\n"
    "                       a tensor none carries stays as GLOBAL has it. A group delta and\n"
    "                       the median, trimmed mean and Multi-Krum need the same tensors\n"
    "                       from every delta: one that leaves out any other than these is\n"
    "                       refused\n"
    "  --check              check each delta as the merge would (payload hash, base,\n"
    "                       round, counters, NaN/Inf, the bounds below) and print one JSON\n"
    "                       object per delta: accepted, or the reason it is refused; writes\n"
    "                       nothing; exit 0 if every delta is valid, else 1. Costs one\n"
    "                       read of the base and of each delta (an aggregator judges each\n"
    "                       delivery as it arrives); with --group-id, as a group's merge\n"
    "                       judges it (every member leaves out the same tensors)\n"
    "  --inspect            print what each delta says about itself (client, round, base,\n"
    "                       steps, batch, sequence, tokens), one JSON object per line, from\n"
    "                       its header alone: e.g. to check its signature by its client id\n"
    "  --outer NAME         fedavg (default), nesterov, adam or yogi\n"
    "  --outer-lr X         server learning rate (fedavg 1.0, nesterov 0.7, adam/yogi 0.01)\n"
    "  --momentum M         nesterov momentum (default 0.9)\n"
    "  --beta1 X --beta2 X  adam/yogi moment decay rates (default 0.9, 0.99)\n"
    "  --tau X              adam/yogi adaptivity floor; v starts at tau^2 (default 1e-3)\n"
    "  --weighting W        tokens (default: by tokens trained) or uniform\n"
    "  --server-state FILE  outer optimizer state (momentum, moments), read if it\n"
    "                       exists; written back unless --server-state-out is given\n"
    "  --server-state-out FILE  write the new server state here instead\n"
    "  --skip-bad           skip invalid deltas (listed on stderr) instead of failing\n"
    "  --min-clients K      fewest valid deltas to accept (default 1)\n"
    "  --max-local-steps N  refuse a delta of more than N local steps (default: no bound)\n"
    "  --max-tokens N       refuse a delta of more than N tokens (default: no bound)\n"
    "\n"
    "Robust merging (docs/ALGORITHM.md, \"Robust merges\"): a signed, well-formed delta\n"
    "can still be ruinous. Each delta's L2 norm and its cosine similarity with the\n"
    "aggregate are reported (stderr, --json) and, with any option below, kept in the\n"
    "audit trail with the rule and its settings, so --verify needs the same options.\n"
    "  --aggregate RULE     mean (default: weighted by --weighting), median (coordinate-\n"
    "                       wise), trimmed-mean (coordinate-wise, --trim), multi-krum\n"
    "                       (--byzantine). median and trimmed-mean weigh every delta alike;\n"
    "                       multi-krum averages the deltas it selects with --weighting\n"
    "  --trim F             trimmed-mean: cut floor(F x n) values from each end of every\n"
    "                       coordinate; 0 <= F < 0.5 (default 0.2)\n"
    "  --byzantine F        multi-krum: the number of bad deltas to withstand; needs more\n"
    "                       than 2F + 2 deltas (default 1)\n"
    "  --krum-select M      multi-krum: average the M deltas with the lowest scores\n"
    "                       (default n - F)\n"
    "  --clip-norm X|auto[:F]  scale each delta down to L2 norm at most X, or at most F\n"
    "                       times the median norm of this round's deltas (auto: F = 1)\n"
    "  --max-norm-ratio R   refuse a delta whose norm exceeds R times the median norm\n"
    "                       (a refusal like any bad delta: --skip-bad applies)\n"
    "  --screen DATA...     apply each delta alone to the base and evaluate it on DATA\n"
    "                       (text or token shards, held out from every client); refuse\n"
    "                       one whose loss rises too far. Costs one evaluation per delta\n"
    "                       and one of the base\n"
    "  --screen-tokens N    tokens of DATA to predict (default 8192; 0: all)\n"
    "  --screen-max-rise X  the rise allowed, nats per token (default 0.05)\n"
    "  --screen-from WHAT   median (default): the rise over the median delta's loss this\n"
    "                       round; base: over the base's own loss\n"
    "  --chunk N            values of each delta held in memory at once (default 65536,\n"
    "                       a multiple of 4096): memory is about deltas x N floats plus two\n"
    "                       models; the result does not change\n"
    "\n"
    "The downlink (docs/FORMAT.md, \"Delta formats\"):\n"
    "  --update-out UPDATE  also write the global update, next - base, encoded with\n"
    "                       --update-format (f32, bf16, int8, int4): a client holding\n"
    "                       GLOBAL rebuilds NEXT from it bit for bit (--apply). NEXT is\n"
    "                       itself base + the decoded update, so the aggregator holds\n"
    "                       what its clients hold; give --verify the same --update-format\n"
    "  --apply UPDATE       with --base and --out: write base + UPDATE, checked against\n"
    "                       the SHA-256 of the checkpoint it was made with (nothing is\n"
    "                       written if it differs, or if GLOBAL is not its base)\n"
    "\n"
    "  --json               print a summary as JSON on stdout\n"
    "  --threads N          threads for the heavy loops (default: one per core; results do not change)\n"
    CLI_ACCEPT_UNHASHED_HELP
    "  --help, --version\n";

typedef struct merge_options {
    char personal[256];
    const char *base, *out, *verify, *state_in, *state_out, *update_out, *apply, *delta_out;
    const char **deltas, **screen;
    int num_deltas, num_screen, json, inspect, check;
    int have_trim, have_byzantine, have_select, have_screen_flags;
    photon_merge_options merge;
} merge_options;

/* --clip-norm X, auto or auto:F */
static void parse_clip(merge_options *o, cli_args *a) {
    const char *v = cli_value(a);
    char *end;
    double x;
    if (strncmp(v, "auto", 4) == 0 && (v[4] == '\0' || v[4] == ':')) {
        x = v[4] ? strtod(v + 5, &end) : 1.0;
        if (v[4] && (end == v + 5 || *end || !(x > 0 && x <= 1e6)))
            cli_usage_error("--clip-norm auto:F needs a factor F above 0, got '%s'", v);
        o->merge.clip_auto = x;
        return;
    }
    x = strtod(v, &end);
    if (end == v || *end || !(x > 0 && x < 1e30)) cli_usage_error("--clip-norm needs a norm above 0, auto or auto:F, got '%s'", v);
    o->merge.clip_norm = x;
}

static int robust(const merge_options *o) {
    const photon_merge_options *m = &o->merge;
    return m->aggregate != PHOTON_AGGREGATE_MEAN || m->clip_norm > 0 || m->clip_auto > 0 || m->max_norm_ratio > 0 ||
           o->num_screen > 0;
}

/* Settings of the robust rules that cannot work, or that do nothing. */
static void check_rules(const merge_options *o) {
    const photon_merge_options *m = &o->merge;
    if (o->have_trim && m->aggregate != PHOTON_AGGREGATE_TRIMMED_MEAN)
        cli_usage_error("--trim goes with --aggregate trimmed-mean");
    if ((o->have_byzantine || o->have_select) && m->aggregate != PHOTON_AGGREGATE_MULTI_KRUM)
        cli_usage_error("--byzantine and --krum-select go with --aggregate multi-krum");
    if (m->aggregate == PHOTON_AGGREGATE_MULTI_KRUM && o->num_deltas <= 2 * m->byzantine + 2)
        cli_usage_error("multi-krum with --byzantine %d needs more than %d deltas (n > 2f + 2); %d given", m->byzantine,
                        2 * m->byzantine + 2, o->num_deltas);
    if (m->aggregate == PHOTON_AGGREGATE_MULTI_KRUM && m->krum_select > o->num_deltas - m->byzantine)
        cli_usage_error("--krum-select %d is more than n - f = %d", m->krum_select, o->num_deltas - m->byzantine);
    if (o->have_screen_flags && !o->num_screen) cli_usage_error("--screen-tokens, --screen-max-rise and --screen-from go with --screen DATA");
}

static void parse_args(merge_options *o, int argc, char **argv) {
    cli_args a;
    int kind = PHOTON_OUTER_FEDAVG, have_lr = 0;
    float lr = 0.0f, momentum = -1.0f, beta1 = -1.0f, beta2 = -1.0f, tau = -1.0f;
    memset(o, 0, sizeof *o);
    o->deltas = (const char **)calloc((size_t)argc + 1, sizeof(char *));
    o->screen = (const char **)calloc((size_t)argc + 1, sizeof(char *));
    o->merge.min_clients = 1;
    o->merge.trim = 0.2;
    o->merge.byzantine = 1;
    o->merge.screen_tokens = 8192;
    o->merge.screen_max_rise = 0.05;
    o->merge.screen_from_median = 1;
    cli_begin(&a, argc, argv);
    while (cli_next(&a)) {
        cli_help_or_version(&a, usage); /* exits if it was one of them */
        if (cli_is(&a, "--base")) {
            o->base = cli_value(&a);
        } else if (cli_is(&a, "--out")) {
            o->out = cli_value(&a);
        } else if (cli_is(&a, "--verify")) {
            o->verify = cli_value(&a);
        } else if (cli_is(&a, "--delta-out")) {
            o->delta_out = cli_value(&a);
        } else if (cli_is(&a, "--personal")) {
            const char *v = cli_value(&a);
            size_t n = strlen(o->personal);
            if (n + strlen(v) + 2 > sizeof o->personal) cli_usage_error("--personal: the patterns pass 255 characters");
            snprintf(o->personal + n, sizeof o->personal - n, "%s%s", n ? "," : "", v);
            o->merge.personal = o->personal;
        } else if (cli_is(&a, "--group-id")) {
            o->merge.group_id = cli_value(&a);
            if (!photon_client_id_valid(o->merge.group_id))
                cli_usage_error("--group-id must be 1 to 63 letters, digits, '.', '_' or '-'");
        } else if (cli_is(&a, "--outer")) {
            const char *name = cli_value(&a);
            kind = photon_outer_parse(name);
            if (kind < 0) cli_usage_error("--outer must be fedavg, nesterov, adam or yogi, got '%s'", name);
        } else if (cli_is(&a, "--outer-lr")) {
            lr = (float)cli_float(&a, 0.0, 100.0);
            have_lr = 1;
        } else if (cli_is(&a, "--momentum")) {
            momentum = (float)cli_float(&a, 0.0, 0.999999);
        } else if (cli_is(&a, "--beta1")) {
            beta1 = (float)cli_float(&a, 0.0, 0.999999);
        } else if (cli_is(&a, "--beta2")) {
            beta2 = (float)cli_float(&a, 0.0, 0.999999);
        } else if (cli_is(&a, "--tau")) {
            tau = (float)cli_float(&a, 1e-30, 10.0);
        } else if (cli_is(&a, "--weighting")) {
            const char *w = cli_value(&a);
            if (strcmp(w, "tokens") != 0 && strcmp(w, "uniform") != 0)
                cli_usage_error("--weighting must be tokens or uniform, got '%s'", w);
            o->merge.outer.uniform = strcmp(w, "uniform") == 0;
        } else if (cli_is(&a, "--server-state")) {
            o->state_in = cli_value(&a);
        } else if (cli_is(&a, "--server-state-out")) {
            o->state_out = cli_value(&a);
        } else if (cli_is(&a, "--skip-bad")) {
            cli_no_value(&a);
            o->merge.skip_bad = 1;
        } else if (cli_is(&a, "--min-clients")) {
            o->merge.min_clients = (int)cli_int(&a, 1, 1 << 20);
        } else if (cli_is(&a, "--max-local-steps")) {
            o->merge.max_local_steps = (uint64_t)cli_int(&a, 1, LLONG_MAX);
        } else if (cli_is(&a, "--max-tokens")) {
            o->merge.max_tokens = (uint64_t)cli_int(&a, 1, LLONG_MAX);
        } else if (cli_is(&a, "--aggregate")) {
            const char *name = cli_value(&a);
            int rule = photon_aggregate_parse(name);
            if (rule < 0) cli_usage_error("--aggregate must be mean, median, trimmed-mean or multi-krum, got '%s'", name);
            o->merge.aggregate = (photon_aggregate_kind)rule;
        } else if (cli_is(&a, "--trim")) {
            o->merge.trim = cli_float(&a, 0.0, 1.0);
            if (o->merge.trim >= 0.5)
                cli_usage_error("--trim %g would cut every value of a coordinate: it must be below 0.5", o->merge.trim);
            o->have_trim = 1;
        } else if (cli_is(&a, "--byzantine")) {
            o->merge.byzantine = (int)cli_int(&a, 0, 1 << 20);
            o->have_byzantine = 1;
        } else if (cli_is(&a, "--krum-select")) {
            o->merge.krum_select = (int)cli_int(&a, 1, 1 << 20);
            o->have_select = 1;
        } else if (cli_is(&a, "--clip-norm")) {
            parse_clip(o, &a);
        } else if (cli_is(&a, "--max-norm-ratio")) {
            o->merge.max_norm_ratio = cli_float(&a, 1.0, 1e12);
        } else if (cli_is(&a, "--screen")) {
            cli_files(&a, o->screen, &o->num_screen);
        } else if (cli_is(&a, "--screen-tokens")) {
            o->merge.screen_tokens = (uint64_t)cli_int(&a, 0, LLONG_MAX);
            o->have_screen_flags = 1;
        } else if (cli_is(&a, "--screen-max-rise")) {
            o->merge.screen_max_rise = cli_float(&a, -1e6, 1e6);
            o->have_screen_flags = 1;
        } else if (cli_is(&a, "--screen-from")) {
            const char *v = cli_value(&a);
            if (strcmp(v, "median") != 0 && strcmp(v, "base") != 0)
                cli_usage_error("--screen-from must be median or base, got '%s'", v);
            o->merge.screen_from_median = strcmp(v, "median") == 0;
            o->have_screen_flags = 1;
        } else if (cli_is(&a, "--update-out")) {
            o->update_out = cli_value(&a);
        } else if (cli_is(&a, "--update-format")) {
            const char *v = cli_value(&a);
            int f = photon_delta_format_parse(v);
            if (f < 0) cli_usage_error("--update-format must be f32, bf16, int8 or int4, got '%s'", v);
            o->merge.update_format = (photon_delta_format)f;
            o->merge.compress_update = 1;
        } else if (cli_is(&a, "--apply")) {
            o->apply = cli_value(&a);
        } else if (cli_is(&a, "--chunk")) {
            long long c = cli_int(&a, 4096, 1LL << 32);
            if (c % 4096) cli_usage_error("--chunk %lld: must be a multiple of 4096", c);
            o->merge.chunk = (size_t)c;
        } else if (cli_is(&a, "--json")) {
            cli_no_value(&a);
            o->json = 1;
        } else if (cli_is(&a, "--check")) {
            cli_no_value(&a);
            o->check = 1;
        } else if (cli_is(&a, "--inspect")) {
            cli_no_value(&a);
            o->inspect = 1;
        } else if (cli_is(&a, "--accept-unhashed")) {
            cli_no_value(&a);
            photon_accept_unhashed(1);
        } else if (cli_is(&a, "--threads")) {
            photon_set_threads((int)cli_int(&a, 1, 64));
        } else if (a.flag[0] == '\0') {
            o->deltas[o->num_deltas++] = argv[a.i];
        } else {
            cli_usage_error("unknown option %s", a.flag);
        }
    }
    {
        int uniform = o->merge.outer.uniform;
        photon_outer_defaults(&o->merge.outer, (photon_outer_kind)kind);
        o->merge.outer.uniform = uniform;
    }
    if (have_lr) o->merge.outer.lr = lr;
    if (momentum >= 0) o->merge.outer.momentum = momentum;
    if (beta1 >= 0) o->merge.outer.beta1 = beta1;
    if (beta2 >= 0) o->merge.outer.beta2 = beta2;
    if (tau >= 0) o->merge.outer.tau = tau;
    if (o->inspect) {
        if (o->num_deltas == 0) cli_usage_error("--inspect needs DELTA files");
        if (o->base || o->out || o->verify) cli_usage_error("--inspect reads deltas alone: no --base, --out or --verify");
        return;
    }
    if (!o->base) cli_usage_error("--base is required");
    if (o->delta_out) {
        if (o->out) cli_usage_error("give --out (a checkpoint) or --delta-out (a group delta), not both");
        if (!o->merge.group_id) cli_usage_error("--delta-out needs --group-id: the group delta's id at the parent");
        o->out = o->delta_out;
    }
    if (o->merge.group_id) {
        if (!o->delta_out && !o->verify && !o->check) cli_usage_error("--group-id goes with --delta-out, --verify or --check");
        if (kind != PHOTON_OUTER_FEDAVG || (have_lr && lr != 1.0f) || o->state_in)
            cli_usage_error("a group delta passes its members' mean up unchanged: --outer, --outer-lr and "
                            "--server-state belong to the root merge");
        if (o->update_out || o->merge.compress_update || o->apply)
            cli_usage_error("--group-id makes a group delta: no --update-out, --update-format or --apply");
    }
    if (o->apply) {
        if (!o->out || o->verify || o->check || o->num_deltas || o->update_out || o->merge.compress_update || robust(o))
            cli_usage_error("--apply UPDATE takes --base and --out only");
        return;
    }
    if (o->update_out && !o->merge.compress_update) cli_usage_error("--update-out needs --update-format");
    if (o->update_out && !o->out) cli_usage_error("--update-out goes with --out (--verify takes --update-format alone)");
    if (o->merge.compress_update && o->out && !o->update_out)
        cli_usage_error("--update-format with --out goes with --update-out (where the update is written)");
    if (o->check) {
        if (o->out || o->verify || o->state_in) cli_usage_error("--check writes nothing: no --out, --verify or --server-state");
        if (robust(o))
            cli_usage_error("--check judges each delta alone: the robust rules (--aggregate, --clip-norm, "
                            "--max-norm-ratio, --screen) need the whole round");
        if (o->num_deltas == 0) cli_usage_error("--check needs DELTA files");
        o->merge.skip_bad = 1; /* every delta gets its verdict */
        o->merge.min_clients = 1;
        photon_outer_defaults(&o->merge.outer, PHOTON_OUTER_FEDAVG); /* the checks do not depend on the outer step */
        return;
    }
    if (!o->out == !o->verify) cli_usage_error("give exactly one of --out, --verify and --check");
    if (o->num_deltas == 0) cli_usage_error("no deltas given");
    if (o->state_out && !o->state_in) cli_usage_error("--server-state-out goes with --server-state");
    if (kind == PHOTON_OUTER_FEDAVG && o->state_in) cli_usage_error("fedavg keeps no server state; drop --server-state");
    if (kind != PHOTON_OUTER_FEDAVG && !o->state_in)
        cli_usage_error("--outer %s keeps momentum between rounds: give --server-state FILE", photon_outer_name(kind));
    if (o->merge.min_clients > o->num_deltas)
        cli_usage_error("--min-clients %d is more than the %d deltas given", o->merge.min_clients, o->num_deltas);
    check_rules(o);
}

static void print_json(const merge_options *o, const photon_merge_result *res, int verified) {
    int i;
    printf("{\"out\":");
    cli_json_string(stdout, o->out ? o->out : o->verify);
    printf(",\"round\":%llu,\"step\":%llu,\"tokens_seen\":%llu,\"outer\":\"%s\",\"aggregate\":\"%s\",\"merged\":%d,"
           "\"verified\":%s,\"median_norm\":",
           (unsigned long long)res->model.round, (unsigned long long)res->model.step,
           (unsigned long long)res->model.tokens_seen, photon_outer_name(o->merge.outer.kind),
           photon_aggregate_name(o->merge.aggregate), res->accepted, o->verify ? (verified ? "true" : "false") : "null");
    cli_json_number(stdout, res->median_norm);
    printf(",\"clip_bound\":");
    cli_json_number(stdout, res->clip_bound > 0 ? res->clip_bound : NAN);
    printf(",\"screen_base_loss\":");
    cli_json_number(stdout, res->screen_base_loss);
    printf(",\"group_id\":");
    if (o->merge.group_id) cli_json_string(stdout, o->merge.group_id);
    else printf("null");
    printf(",\"update\":");
    if (o->update_out) cli_json_string(stdout, o->update_out);
    else printf("null");
    printf(",\"update_format\":");
    if (o->merge.compress_update) printf("\"%s\"", photon_delta_format_name(o->merge.update_format));
    else printf("null");
    printf(",\"deltas\":[");
    for (i = 0; i < res->num_entries; i++) {
        const photon_merge_entry *e = &res->entries[i];
        printf("%s{\"path\":", i ? "," : "");
        cli_json_string(stdout, e->path);
        printf(",\"client\":");
        cli_json_string(stdout, e->info.client);
        printf(",\"accepted\":%s,\"weight\":", e->accepted ? "true" : "false");
        cli_json_number(stdout, e->accepted ? e->weight : 0.0);
        printf(",\"format\":\"%s\",\"tokens\":%llu,\"loss\":", photon_delta_format_name(e->info.format),
               (unsigned long long)e->info.tokens);
        cli_json_number(stdout, e->info.loss);
        { /* what was measured of it (null where not) */
            const char *names[6] = {"norm", "scale", "cosine", "screen_loss", "krum_score", "trimmed"};
            double values[6];
            int k;
            values[0] = e->norm, values[1] = e->scale, values[2] = e->cosine, values[3] = e->screen_loss;
            values[4] = e->krum_score, values[5] = e->trimmed;
            for (k = 0; k < 6; k++) {
                printf(",\"%s\":", names[k]);
                cli_json_number(stdout, values[k]);
            }
        }
        printf(",\"clipped\":%s,\"refused_by\":", e->accepted && e->scale < 1.0 ? "true" : "false");
        cli_json_string(stdout, e->refused_by);
        printf(",\"reason\":");
        cli_json_string(stdout, e->reason);
        printf("}");
    }
    printf("]}\n");
}

/* One line per delta on stderr: what it was and what the rules did with it. */
static void report(const merge_options *o, const photon_merge_result *res) {
    int i;
    for (i = 0; i < res->num_entries; i++) {
        const photon_merge_entry *e = &res->entries[i];
        char what[160] = "";
        size_t n = 0;
        if (e->norm != e->norm) continue; /* refused before it was measured: its reason says why */
        n += (size_t)snprintf(what + n, sizeof what - n, "norm %.4g", e->norm);
        if (e->cosine == e->cosine) n += (size_t)snprintf(what + n, sizeof what - n, ", cosine %.3f", e->cosine);
        if (e->screen_loss == e->screen_loss)
            n += (size_t)snprintf(what + n, sizeof what - n, ", screening loss %.4f", e->screen_loss);
        if (e->krum_score == e->krum_score) n += (size_t)snprintf(what + n, sizeof what - n, ", krum %.4g", e->krum_score);
        if (e->accepted && e->scale < 1.0) n += (size_t)snprintf(what + n, sizeof what - n, ", clipped x%.3g", e->scale);
        if (e->trimmed == e->trimmed)
            n += (size_t)snprintf(what + n, sizeof what - n, ", %.1f%% of its values cut", 100.0 * e->trimmed);
        fprintf(stderr, "%s: %s %s: %s%s%s\n", cli_prog, e->info.client,
                e->accepted ? "merged" : e->refused_by[0] ? "refused" : "left out", what,
                e->accepted ? "" : " - ", e->accepted ? "" : e->refused_by);
    }
    (void)o;
}

/* --apply: base + update, as one output checked against the hash it names. */
static int apply(merge_options *o) {
    photon_outputs outputs;
    photon_error err;
    const char *temp = NULL;
    photon_outputs_init(&outputs);
    if (photon_outputs_add(&outputs, o->out, &temp, &err) != PHOTON_OK ||
        photon_update_apply(o->base, o->apply, temp, &err) != PHOTON_OK || photon_outputs_commit(&outputs, &err) != PHOTON_OK) {
        photon_outputs_abort(&outputs);
        cli_fail(&err);
    }
    fprintf(stderr, "%s: applied %s to %s: %s\n", cli_prog, o->apply, o->base, o->out);
    if (o->json) {
        printf("{\"out\":");
        cli_json_string(stdout, o->out);
        printf(",\"update\":");
        cli_json_string(stdout, o->apply);
        printf("}\n");
    }
    free((void *)o->deltas);
    free((void *)o->screen);
    return 0;
}

/* One JSON line per delta: what its header says. */
static int inspect(const merge_options *o) {
    photon_delta_info info;
    photon_config c;
    photon_error err;
    int i;
    for (i = 0; i < o->num_deltas; i++) {
        if (photon_delta_read_info(o->deltas[i], &info, &c, &err) != PHOTON_OK) cli_fail(&err);
        printf("{\"path\":");
        cli_json_string(stdout, o->deltas[i]);
        printf(",\"client\":");
        cli_json_string(stdout, info.client);
        printf(",\"round\":%llu,\"base_sha256\":\"%s\",\"local_steps\":%llu,\"batch\":%llu,\"seq\":%llu,\"tokens\":%llu,"
               "\"loss\":", (unsigned long long)info.round, info.base_sha256, (unsigned long long)info.local_steps,
               (unsigned long long)info.batch, (unsigned long long)info.seq, (unsigned long long)info.tokens);
        cli_json_number(stdout, info.loss);
        printf(",\"personal\":");
        cli_json_string(stdout, info.personal);
        printf(",\"members\":%llu,\"config\":{\"vocab_size\":%d,\"n_ctx\":%d,\"n_layer\":%d,\"n_head\":%d,\"n_embd\":%d}}\n",
               (unsigned long long)info.members, c.vocab_size, c.n_ctx, c.n_layer, c.n_head, c.n_embd);
    }
    return 0;
}

/* One JSON line per delta: whether the merge would take it, and if not why. */
static int check(const merge_options *o) {
    photon_merge_result res;
    photon_error err;
    int i, all = 1;
    photon_result r = photon_merge(o->base, o->deltas, o->num_deltas, NULL, &o->merge, &res, &err);
    if (r != PHOTON_OK && res.num_entries == 0) cli_fail(&err); /* the base itself, or memory: no delta was judged */
    for (i = 0; i < res.num_entries; i++) {
        const photon_merge_entry *e = &res.entries[i];
        /* valid alone, yet the merge failed (its outer step overflowed): the merge's reason is its reason */
        int accepted = e->accepted && r == PHOTON_OK;
        const char *reason = e->accepted ? (r == PHOTON_OK ? "" : err.message) : e->reason;
        printf("{\"path\":");
        cli_json_string(stdout, e->path);
        printf(",\"client\":");
        cli_json_string(stdout, e->info.client);
        printf(",\"accepted\":%s,\"tokens\":%llu,\"local_steps\":%llu,\"reason\":", accepted ? "true" : "false",
               (unsigned long long)e->info.tokens, (unsigned long long)e->info.local_steps);
        cli_json_string(stdout, reason);
        printf("}\n");
        if (!accepted) {
            fprintf(stderr, "%s: refused %s%s%s\n", cli_prog, e->accepted ? e->path : "", e->accepted ? ": " : "", reason);
            all = 0;
        }
    }
    photon_merge_result_free(&res);
    return all ? 0 : 1;
}

int main(int argc, char **argv) {
    merge_options o;
    photon_merge_result res;
    photon_error err;
    photon_outputs outputs;
    photon_dataset screen;
    const char *out_temp = NULL, *state_temp = NULL, *update_temp = NULL, *state_path;
    int i, verified = 0;
    cli_start("photon-merge");
    parse_args(&o, argc, argv);
    memset(&screen, 0, sizeof screen);
    if (o.num_screen) { /* held-out text or shards, tokens as the model reads them (bytes, or a shard's ids) */
        if (photon_dataset_load(&screen, o.screen, o.num_screen, &err) != PHOTON_OK) cli_fail(&err);
        o.merge.screen = &screen;
    }
    if (o.apply) return apply(&o);
    if (o.inspect || o.check) { /* the modes that write nothing */
        int status = o.inspect ? inspect(&o) : check(&o);
        free((void *)o.deltas);
        free((void *)o.screen);
        return status;
    }
    state_path = o.state_out ? o.state_out : o.state_in;
    photon_outputs_init(&outputs); /* the checkpoint and the server state appear together */
    if ((o.out && photon_outputs_add(&outputs, o.out, &out_temp, &err) != PHOTON_OK) ||
        (o.out && o.state_in && photon_outputs_add(&outputs, state_path, &state_temp, &err) != PHOTON_OK) ||
        (o.update_out && photon_outputs_add(&outputs, o.update_out, &update_temp, &err) != PHOTON_OK))
        cli_fail(&err);
    if (photon_merge(o.base, o.deltas, o.num_deltas, o.state_in, &o.merge, &res, &err) != PHOTON_OK) {
        for (i = 0; i < res.num_entries; i++)
            if (!res.entries[i].accepted && res.entries[i].reason[0] && strcmp(res.entries[i].reason, err.message) != 0)
                fprintf(stderr, "%s: refused %s\n", cli_prog, res.entries[i].reason);
        photon_merge_result_free(&res);
        cli_fail(&err);
    }
    report(&o, &res);
    for (i = 0; i < res.num_entries; i++)
        if (!res.entries[i].accepted)
            fprintf(stderr, "%s: %s %s\n", cli_prog, res.entries[i].left_out_by_rule ? "left out" : "skipped",
                    res.entries[i].reason);
    if (o.verify) {
        if (photon_merge_verify(&res, o.verify, &verified, &err) != PHOTON_OK) cli_fail(&err);
        fprintf(stderr, "%s: %s %s the merge of %d deltas into %s\n", cli_prog, o.verify,
                verified ? "matches" : "DOES NOT match", res.accepted, o.base);
    } else {
        char next_sha[65];
        if (photon_merge_save(&res, out_temp, &err) != PHOTON_OK ||
            (state_temp && photon_server_state_save(&res.state, &res.model.config, state_temp, &err) != PHOTON_OK) ||
            (update_temp && (photon_sha256_file(out_temp, next_sha, &err) != PHOTON_OK ||
                             photon_update_save(&res, next_sha, update_temp, &err) != PHOTON_OK)) ||
            photon_outputs_commit(&outputs, &err) != PHOTON_OK) {
            photon_outputs_abort(&outputs);
            cli_fail(&err);
        }
        if (o.delta_out)
            fprintf(stderr, "%s: merged %d of %d deltas by %s into the group delta %s of '%s' (%llu tokens, round %llu)\n",
                    cli_prog, res.accepted, res.num_entries, photon_aggregate_name(o.merge.aggregate), o.out,
                    res.group_id, (unsigned long long)res.tokens, (unsigned long long)res.model.round);
        else
            fprintf(stderr, "%s: merged %d of %d deltas by %s with %s into %s (round %llu, global step %llu)\n", cli_prog,
                    res.accepted, res.num_entries, photon_aggregate_name(o.merge.aggregate),
                    photon_outer_name(o.merge.outer.kind), o.out,
                    (unsigned long long)res.model.round, (unsigned long long)res.model.step);
    }
    if (o.update_out) fprintf(stderr, "%s: wrote the %s update %s\n", cli_prog,
                              photon_delta_format_name(o.merge.update_format), o.update_out);
    if (o.json) print_json(&o, &res, verified);
    photon_merge_result_free(&res);
    photon_dataset_free(&screen);
    free((void *)o.deltas);
    free((void *)o.screen);
    return o.verify && !verified ? 1 : 0;
}
