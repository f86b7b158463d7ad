# cmd.sh: how jobs run (ESPnet convention). "local" runs on this machine with utils/run.pl;
# "slurm" submits with utils/slurm.pl (sbatch; partitions etc. in conf/slurm.conf, one option a line).
cmd_backend=${SPEECHCLIP_CMD_BACKEND:-local}
if [ "${cmd_backend}" = local ]; then
    export train_cmd="utils/run.pl"
    export cuda_cmd="utils/run.pl"
    export decode_cmd="utils/run.pl"
elif [ "${cmd_backend}" = slurm ]; then
    slurm_conf=""
    [ -f conf/slurm.conf ] && slurm_conf="--config conf/slurm.conf"
    export train_cmd="utils/slurm.pl ${slurm_conf}"
    export cuda_cmd="utils/slurm.pl ${slurm_conf}"
    export decode_cmd="utils/slurm.pl ${slurm_conf}"
else
    echo "cmd.sh: unknown cmd_backend ${cmd_backend} (local or slurm)" >&2
    return 1
fi
