# cmd.sh: how jobs run (ESPnet convention). Pick with SPEECHCLIP_CMD_BACKEND=local|slurm|sge:
#   local  utils/run.pl on this machine (default)
#   slurm  utils/slurm.pl (sbatch --wait); extra sbatch options in conf/slurm.conf, e.g. --partition=gpu
#   sge    utils/queue.pl (qsub -sync y) for Sun/Univa/Son of Grid Engine; extra qsub options in
#          conf/queue.conf, e.g. -q gpu.q
cmd_backend=${SPEECHCLIP_CMD_BACKEND:-local}
case "${cmd_backend}" in
    local) submit="utils/run.pl" ;;
    slurm) submit="utils/slurm.pl"; [ -f conf/slurm.conf ] && submit+=" --config conf/slurm.conf" ;;
    sge)   submit="utils/queue.pl"; [ -f conf/queue.conf ] && submit+=" --config conf/queue.conf" ;;
    *) echo "cmd.sh: unknown cmd_backend ${cmd_backend} (local, slurm or sge)" >&2
       return 1 ;;
esac
export train_cmd="${submit}"
export cuda_cmd="${submit}"
export decode_cmd="${submit}"
