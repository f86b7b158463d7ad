#!/usr/bin/env perl
# submit.pl, called as slurm.pl (Slurm) or queue.pl (Sun/Univa/Son of Grid Engine): run a command,
# or a JOB=1:N array of jobs, through the cluster's scheduler with its output in a log file.
# Same command-line interface as Kaldi's/ESPnet's utils/slurm.pl and utils/queue.pl
# (espnet2.bin.launch picks its mode by the script's name and passes --gpu/--num_threads/--num_nodes),
# written small for machines without Kaldi.
#
# Usage: slurm.pl|queue.pl [options] [JOB=1:N] <log-file> <command...>
#   option           slurm.pl (sbatch --wait)     queue.pl (qsub -sync y -cwd -j y)
#   --gpu N          --gres=gpu:N                 -l gpu=N
#   --mem M          --mem=M                      -l mem_free=M,ram_free=M
#   --num-threads N  --cpus-per-task=N            -pe smp N
#   --num_nodes N    --nodes=N                    -pe mpi N (ESPnet's launcher runs mpirun in it)
#   --time T         --time=T                     -l h_rt=T
#   --name X         --job-name=X                 -N X
#   --max-jobs-run N: at most N submitted at once
#   --config F       extra scheduler options, whitespace-separated, "#" comments (e.g. "--partition=gpu"
#                    for Slurm, "-q gpu.q" for SGE); conf/slurm.conf or conf/queue.conf via cmd.sh.
# Each job submits a generated script under <log-dir>/q/ and waits for it; the exit status is 0 iff
# every job succeeded. $SBATCH / $QSUB override the submit command (used by the tests).
use strict;
use warnings;
use File::Basename qw(basename);

my $me = basename($0);
my %backends = (
    "slurm.pl" => { submit => $ENV{SBATCH} // "sbatch",
                    wait => sub { my ($name, $out) = @_; ("--wait", "--job-name=$name", "--output=$out") },
                    map => { "gpu" => sub { "--gres=gpu:$_[0]" }, "mem" => sub { "--mem=$_[0]" },
                             "num-threads" => sub { "--cpus-per-task=$_[0]" }, "num_nodes" => sub { "--nodes=$_[0]" },
                             "time" => sub { "--time=$_[0]" }, "name" => sub { "--job-name=$_[0]" } } },
    "queue.pl" => { submit => $ENV{QSUB} // "qsub",
                    wait => sub { my ($name, $out) = @_; ("-sync", "y", "-cwd", "-j", "y", "-N", $name, "-o", $out) },
                    map => { "gpu" => sub { ("-l", "gpu=$_[0]") }, "mem" => sub { ("-l", "mem_free=$_[0],ram_free=$_[0]") },
                             "num-threads" => sub { $_[0] > 1 ? ("-pe", "smp", $_[0]) : () },
                             "num_nodes" => sub { $_[0] > 1 ? ("-pe", "mpi", $_[0]) : () },
                             "time" => sub { ("-l", "h_rt=$_[0]") }, "name" => sub { ("-N", $_[0]) } } },
);
my $backend = $backends{$me} or die "submit.pl: call it as slurm.pl or queue.pl, not $me\n";

my @sched_opts;
my $max_jobs = 100;
while (@ARGV && $ARGV[0] =~ /^--(\S+)$/) {
    my $opt = $1;
    shift @ARGV;
    die "$me: option --$opt needs a value\n" unless @ARGV;
    my $val = shift @ARGV;
    $opt = "num-threads" if $opt eq "num_threads";
    if ($opt eq "max-jobs-run" || $opt eq "max_jobs_run") { $max_jobs = $val; }
    elsif ($opt eq "config") {
        open(my $cf, "<", $val) or die "$me: cannot read config $val\n";
        while (<$cf>) { chomp; s/#.*//; push @sched_opts, split(" ", $_) if /\S/; }
        close $cf;
    }
    elsif (exists $backend->{map}{$opt}) { push @sched_opts, $backend->{map}{$opt}->($val) unless $opt eq "gpu" && $val == 0; }
    else { die "$me: unknown option --$opt\n"; }
}
my ($jobname, $start, $end, $ranged) = ("", 1, 1, 0);
if (@ARGV && $ARGV[0] =~ /^([\w_][\w\d_]*)=(\d+):(\d+)$/) {
    ($jobname, $start, $end, $ranged) = ($1, $2, $3, 1);
    shift @ARGV;
}
die "Usage: $me [options] [JOB=1:N] <log-file> <command...>\n" if @ARGV < 2;
my $logfile = shift @ARGV;
my $cmd = join(" ", map { /^\S+$/ ? $_ : (/"/ ? "'$_'" : "\"$_\"") } @ARGV);

my (%running, @failed);
for my $job ($start .. $end) {
    reap() while scalar(keys %running) >= $max_jobs;
    my ($log, $this) = ($logfile, $cmd);
    if ($ranged) { $log =~ s/\b$jobname\b/$job/g; $this =~ s/\b$jobname\b/$job/g; }
    my $dir = ($log =~ m:^(.*)/[^/]*$:) ? $1 : ".";
    system("mkdir", "-p", "$dir/q");
    my $base = $log; $base =~ s:.*/::;
    my $script = "$dir/q/$base.sh";
    open(my $fh, ">", $script) or die "$me: cannot write $script\n";
    print $fh "#!/usr/bin/env bash\ncd " . `pwd` . "echo '# $this' > '$log'\necho \"# Started at \$(date)\" >> '$log'\n";
    print $fh "( $this ) >> '$log' 2>&1\nret=\$?\necho \"# Ended (code \$ret) at \$(date)\" >> '$log'\nexit \$ret\n";
    close $fh;
    chmod 0755, $script;
    my $pid = fork();
    die "$me: fork failed\n" unless defined $pid;
    if ($pid == 0) {
        exec($backend->{submit}, $backend->{wait}->($base, "$dir/q/$base.out"), @sched_opts, $script) or exit 127;
    }
    $running{$pid} = $log;
}
reap() while %running;
if (@failed) {
    print STDERR "$me: " . scalar(@failed) . " / " . ($end - $start + 1) . " failed, log is in $failed[0]\n";
    exit 1;
}
exit 0;

sub reap {
    my $pid = wait();
    return if $pid < 0;
    push @failed, $running{$pid} if $? != 0;
    delete $running{$pid};
}
