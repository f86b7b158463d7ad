#!/usr/bin/env bash
# speechclip.sh: the stages of a SpeechCLIP / SpeechCLIP+ recipe, shared by every egs2/<corpus>/speechclip1.
#
#   1 data preparation (local/data.sh)        5 evaluation (retrieval, keywords, CIF boundaries)
#   2 audio check / repair / filter -> dump    6 pack for the model zoo (zip with ESPnet's meta.yaml)
#   3 frozen CLIP: image embeddings, vocab     7 upload to the Hugging Face hub (--hf_repo; --dry_run true)
#   4 training with ESPnet's trainer           8 SUPERB-style probing via s3prl (keyword spotting)
#
# Stages 6-8 run after the main job: ./run.sh --stage 6 --stop_stage 8 --hf_repo <org>/<name> --dry_run true
#
# Each stage logs a banner and writes a .done marker; re-running a finished stage is a no-op
# (pass --redo true to run the selected stages again). Starting at --stage 4 trains on the data of
# stages 1-3 (a new --tag or --train_config gives a new exp dir).
set -e -u -o pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}
SECONDS=0

# General
stage=1; stop_stage=5; redo=false
ngpu=0; num_nodes=1; nj=2; python=python3
dumpdir=dump; expdir=exp; tag=""
# Data
local_data_opts=""; train_set=train; valid_set=dev; test_sets=test
# Stage 2
fs=16000; min_sec=0.1; max_sec=60; max_drop_share=0.1
# Stage 3: a pretrained CLIP by name/tag or local .pt, or a tiny CLIP trained here (tiny_clip_config)
clip_model_name=ViT-B-32; clip_pretrained=openai; clip_model_config=""
tiny_clip_config=""; tiny_clip_opts=""
clip_vocab_rule=train   # train: train captions only; reference: every split's, as SpeechCLIP's stat scripts
# Stage 4
train_config=""; train_args=""; launch_opts=""
# Stage 5
eval_sets=""
# Stages 5-8 on a model not trained by stage 4 (e.g. a converted published checkpoint)
model_dir=""
# Stage 7
hf_repo=""; dry_run=false
# Stage 8
probe_steps=300; probe_eval_step=100; probe_device=cpu; probe_batch_size=32
probe_train_speakers=24; probe_dev_speakers=4; probe_test_speakers=8

help_message="Usage: $0 --train_config <yaml> [options]
  --stage / --stop_stage (${stage} / ${stop_stage})   --redo (${redo}): ignore .done markers
  --ngpu (${ngpu}) --num_nodes (${num_nodes}) --nj (${nj}) --tag (default: the config's name)
  --train_set (${train_set}) --valid_set (${valid_set}) --test_sets (\"${test_sets}\")
  --local_data_opts: options for local/data.sh
  --fs (${fs}) --min_sec (${min_sec}) --max_sec (${max_sec}) --max_drop_share (${max_drop_share})
  --clip_model_name (${clip_model_name}) --clip_pretrained (${clip_pretrained}): tag or local .pt
  --clip_model_config: open_clip JSON of a small CLIP; --tiny_clip_config: train one in stage 3
  --clip_vocab_rule (${clip_vocab_rule}): train (train captions only) or reference (all splits, the
                    published models' rule; test captions included)
  --train_config: training YAML; --train_args: extra training options
  --launch_opts: extra espnet2.bin.launch options (e.g. \"--host node1,node2\" for CPU/gloo ranks)
  --eval_sets (default: valid + test sets)
  --model_dir: exp dir of a model not trained here (a converted published checkpoint) for stages 1-3
               and 5-8 (stage 3 then embeds images with its CLIP); --train_config is not needed
  --hf_repo: <org>/<name> to upload to (stage 7, required there)
  --dry_run (${dry_run}): stage 7 writes the folder it would upload to <exp>/hf_upload instead
  --probe_steps (${probe_steps}) --probe_eval_step (${probe_eval_step}) --probe_device (${probe_device})
  --probe_batch_size (${probe_batch_size}): s3prl speech_commands run of stage 8 (SUPERB uses 200000 steps)
  --probe_train_speakers (${probe_train_speakers}) --probe_dev_speakers (${probe_dev_speakers})
  --probe_test_speakers (${probe_test_speakers}): voices of the exported keyword clips"

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh

[ $# -gt 0 ] && { log "${help_message}"; log "Error: unexpected arguments: $*"; exit 2; }
if [ -n "${model_dir}" ]; then
    [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ] && { log "Error: --model_dir is for stages 5-8 (the model exists)"; exit 2; }
    [ -f "${model_dir}/config.yaml" ] || { log "Error: --model_dir ${model_dir}: no config.yaml (convert a published checkpoint with python -m espnet_speechclip.bin.convert_official)"; exit 2; }
    [ -z "${tag}" ] && tag=$(basename "${model_dir}")
    [ -z "${train_config}" ] && train_config="${model_dir}/config.yaml"
fi
[ -z "${train_config}" ] && { log "Error: --train_config is required"; exit 2; }
[ -z "${tag}" ] && tag=$(basename "${train_config}" .yaml)
[ -z "${eval_sets}" ] && eval_sets="${valid_set} ${test_sets}"
speechclip_exp="${model_dir:-${expdir}/speechclip_${tag}}"
clip_dir="${expdir}/clip"
if [ -n "${tiny_clip_config}" ]; then
    clip_model_name=$(basename "${tiny_clip_config}" .json)
    clip_model_config="${clip_dir}/$(basename "${tiny_clip_config}")"
    clip_pretrained="${clip_dir}/${clip_model_name}.pt"
fi
clip_args="--clip_model_name ${clip_model_name} --clip_pretrained ${clip_pretrained}"
[ -n "${clip_model_config}" ] && clip_args+=" --clip_model_config ${clip_model_config}"

# done_already <marker>: the stage finished before and --redo is false
done_already() { [ "${redo}" = false ] && [ -f "$1" ]; }

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    if done_already data/.stage1.done; then
        log "Stage 1: data preparation: already done (data/.stage1.done)"
    else
        log "Stage 1: data preparation: local/data.sh ${local_data_opts}"
        # shellcheck disable=SC2086
        local/data.sh ${local_data_opts}
        touch data/.stage1.done
    fi
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    if done_already "${dumpdir}/.stage2.done"; then
        log "Stage 2: audio formatting: already done (${dumpdir}/.stage2.done)"
    else
        for dset in ${train_set} ${valid_set} ${test_sets}; do
            log "Stage 2: audio formatting: data/${dset} -> ${dumpdir}/${dset}"
            ${python} -m espnet_speechclip.bin.format_audio --data_dir "data/${dset}" --out_dir "${dumpdir}/${dset}" \
                --fs "${fs}" --min_sec "${min_sec}" --max_sec "${max_sec}" --max_drop_share "${max_drop_share}" \
                --nj "${nj}"
        done
        touch "${dumpdir}/.stage2.done"
    fi
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    if done_already "${clip_dir}/.stage3.done"; then
        log "Stage 3: frozen CLIP: already done (${clip_dir}/.stage3.done)"
    else
        mkdir -p "${clip_dir}"
        if [ -n "${tiny_clip_config}" ]; then
            log "Stage 3: training the tiny CLIP ${tiny_clip_config} on ${train_set} -> ${clip_pretrained}"
            cp "${tiny_clip_config}" "${clip_model_config}"
            # shellcheck disable=SC2086
            ${python} -m espnet_speechclip.bin.train_tiny_clip --train_dir "${dumpdir}/${train_set}" \
                --valid_dir "${dumpdir}/${valid_set}" --model_config "${clip_model_config}" \
                --model_name "${clip_model_name}" --output "${clip_pretrained}" ${tiny_clip_opts}
        fi
        for dset in ${train_set} ${valid_set} ${test_sets}; do
            log "Stage 3: CLIP image embeddings: ${dumpdir}/${dset}"
            # shellcheck disable=SC2086
            ${python} -m espnet_speechclip.bin.dump_image_feats --data_dir "${dumpdir}/${dset}" \
                --out_dir "${dumpdir}/${dset}" ${clip_args}
        done
        vocab_texts="${dumpdir}/${train_set}/text"
        if [ "${clip_vocab_rule}" = reference ]; then
            vocab_texts=""
            for dset in ${train_set} ${valid_set} ${test_sets}; do vocab_texts="${vocab_texts:+${vocab_texts} }${dumpdir}/${dset}/text"; done
        fi
        log "Stage 3: reduced CLIP vocabulary (rule ${clip_vocab_rule}) from ${vocab_texts} -> ${clip_dir}/vocab.txt"
        # shellcheck disable=SC2086
        ${python} -m espnet_speechclip.bin.build_clip_vocab --rule "${clip_vocab_rule}" --text ${vocab_texts} \
            --output "${clip_dir}/vocab.txt" ${clip_args}
        touch "${clip_dir}/.stage3.done"
    fi
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    if done_already "${speechclip_exp}/.stage4.done"; then
        log "Stage 4: training: already done (${speechclip_exp}/.stage4.done)"
    else
        log "Stage 4: training ${train_config} -> ${speechclip_exp} (log: ${speechclip_exp}/train.log)"
        mkdir -p "${speechclip_exp}"
        clip_conf="--clip_conf model_name=${clip_model_name} --clip_conf pretrained=${clip_pretrained}"
        [ -n "${clip_model_config}" ] && clip_conf+=" --clip_conf model_config=${clip_model_config}"
        # shellcheck disable=SC2086
        ${python} -m espnet2.bin.launch \
            --cmd "${cuda_cmd} --name ${speechclip_exp}/train.log" \
            --log "${speechclip_exp}/train.log" \
            --ngpu "${ngpu}" --num_nodes "${num_nodes}" \
            --init_file_prefix "${speechclip_exp}/.dist_init_" \
            --multiprocessing_distributed true ${launch_opts} -- \
            ${python} -m espnet_speechclip.bin.speechclip_train \
                --config "${train_config}" --output_dir "${speechclip_exp}" --resume true \
                ${clip_conf} --clip_vocab "${clip_dir}/vocab.txt" \
                --train_data_path_and_name_and_type "${dumpdir}/${train_set}/wav.scp,speech,sound" \
                --train_data_path_and_name_and_type "${dumpdir}/${train_set}/image_feats.scp,image_feats,npy" \
                --train_shape_file "${dumpdir}/${train_set}/speech_shape" \
                --valid_data_path_and_name_and_type "${dumpdir}/${valid_set}/wav.scp,speech,sound" \
                --valid_data_path_and_name_and_type "${dumpdir}/${valid_set}/image_feats.scp,image_feats,npy" \
                --valid_shape_file "${dumpdir}/${valid_set}/speech_shape" \
                ${train_args}
        touch "${speechclip_exp}/.stage4.done"
    fi
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    for dset in ${eval_sets}; do
        outdir="${speechclip_exp}/eval_${dset}"
        if done_already "${outdir}/.stage5.done"; then
            log "Stage 5: evaluation on ${dset}: already done (${outdir}/.stage5.done)"
            continue
        fi
        log "Stage 5: evaluation on ${dumpdir}/${dset} -> ${outdir}"
        ${python} -m espnet_speechclip.bin.speechclip_eval --data_dir "${dumpdir}/${dset}" \
            --model_dir "${speechclip_exp}" --output_dir "${outdir}"
        touch "${outdir}/.stage5.done"
    done
    {
        echo "<!-- Generated by speechclip.sh stage 5 -->"
        echo "# RESULTS"
        ${python} -m espnet_speechclip.bin.show_environment
        echo
        for dset in ${eval_sets}; do cat "${speechclip_exp}/eval_${dset}/RESULTS.md"; echo; done
    } > "${speechclip_exp}/RESULTS.md"
    log "Stage 5: results: ${speechclip_exp}/RESULTS.md"
fi

packed_model="${speechclip_exp}/packed_model.zip"
if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
    if done_already "${speechclip_exp}/.stage6.done"; then
        log "Stage 6: pack: already done (${speechclip_exp}/.stage6.done)"
    else
        log "Stage 6: pack ${speechclip_exp} -> ${packed_model}"
        ${python} -m espnet_speechclip.bin.pack_model --exp_dir "${speechclip_exp}" --outpath "${packed_model}"
        touch "${speechclip_exp}/.stage6.done"
    fi
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
    [ -z "${hf_repo}" ] && { log "Stage 7: Error: --hf_repo <org>/<name> is required"; exit 2; }
    if [ "${dry_run}" = true ]; then
        marker="${speechclip_exp}/.stage7_dry_run.done"
        if done_already "${marker}"; then
            log "Stage 7: upload (dry run): already done (${marker})"
        else
            log "Stage 7: upload (dry run): the folder for ${hf_repo} -> ${speechclip_exp}/hf_upload"
            rm -rf "${speechclip_exp}/hf_upload"
            ${python} -m espnet_speechclip.bin.upload_model --packed "${packed_model}" --hf_repo "${hf_repo}" \
                --dry_run_dir "${speechclip_exp}/hf_upload"
            touch "${marker}"
        fi
    elif done_already "${speechclip_exp}/.stage7.done"; then
        log "Stage 7: upload: already done (${speechclip_exp}/.stage7.done)"
    else
        log "Stage 7: upload ${packed_model} -> https://huggingface.co/${hf_repo}"
        ${python} -m espnet_speechclip.bin.upload_model --packed "${packed_model}" --hf_repo "${hf_repo}"
        touch "${speechclip_exp}/.stage7.done"
    fi
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
    sc_dir="${dumpdir}/speech_commands"
    if done_already "${sc_dir}/.stage8.done"; then
        log "Stage 8: keyword clips: already done (${sc_dir}/.stage8.done)"
    else
        log "Stage 8: SpokenShapes keyword clips in the Speech Commands v0.01 layout -> ${sc_dir}"
        rm -rf "${sc_dir}"
        ${python} -m espnet_speechclip.bin.export_speech_commands --out_dir "${sc_dir}" --nj "${nj}" \
            --num_train_speakers "${probe_train_speakers}" --num_dev_speakers "${probe_dev_speakers}" \
            --num_test_speakers "${probe_test_speakers}"
        touch "${sc_dir}/.stage8.done"
    fi
    probe_dir="${speechclip_exp}/probe"
    if done_already "${probe_dir}/.stage8.done"; then
        log "Stage 8: s3prl probing: already done (${probe_dir}/.stage8.done)"
        # Stage 5 rewrites RESULTS.md on every run: put the probe's table back when it is gone.
        grep -q "stage 8: s3prl probe" "${speechclip_exp}/RESULTS.md" 2>/dev/null || \
            { echo; cat "${probe_dir}/RESULTS.md"; } >> "${speechclip_exp}/RESULTS.md"
    else
        log "Stage 8: s3prl speech_commands on ${packed_model} and its bare upstream (${probe_steps} steps) -> ${probe_dir}"
        rm -rf "${probe_dir}"
        ${python} -m espnet_speechclip.bin.s3prl_probe --model "${packed_model}" --sc_root "${sc_dir}" \
            --expdir "${probe_dir}" --results_md "${speechclip_exp}/RESULTS.md" --total_steps "${probe_steps}" \
            --eval_step "${probe_eval_step}" --batch_size "${probe_batch_size}" --device "${probe_device}"
        touch "${probe_dir}/.stage8.done"
        log "Stage 8: accuracies: ${speechclip_exp}/RESULTS.md (and ${probe_dir}/results.json)"
    fi
fi

log "Successfully finished stages ${stage}-${stop_stage} in ${SECONDS} s"
