#!/usr/bin/env perl
# slurm.pl: run a command (or JOB=1:N array of jobs) through Slurm, output to a log file.
# Same command-line interface as Kaldi's/ESPnet's utils/slurm.pl (espnet2.bin.launch recognises it
# by name and passes --gpu/--num_threads/--num_nodes), written small for machines without Kaldi.
#
# Usage: slurm.pl [options] [JOB=1:N] <log-file> <command...>
#   --gpu N          -> sbatch --gres=gpu:N          --mem M        -> --mem=M
#   --num-threads N  -> --cpus-per-task=N            --num_nodes N  -> --nodes=N
#   --time T         -> --time=T                     --max-jobs-run N: at most N submitted at once
#   --config F       -> extra sbatch options, one per line (e.g. "--partition=gpu")
# Each job is an "sbatch --wait" of a generated script under <log-dir>/q/; the exit status is 0 iff
# every job succeeded. $SBATCH overrides the sbatch command (used by the tests).
use strict;
use warnings;

my @sbatch_opts;
my $max_jobs = 100;
my %map = ("gpu" => "--gres=gpu:", "mem" => "--mem=", "num-threads" => "--cpus-per-task=",
           "num_threads" => "--cpus-per-task=", "num_nodes" => "--nodes=", "time" => "--time=");
while (@ARGV && $ARGV[0] =~ /^--(\S+)$/) {
    my $opt = $1;
    shift @ARGV;
    die "slurm.pl: option --$opt needs a value\n" unless @ARGV;
    my $val = shift @ARGV;
    if ($opt eq "max-jobs-run" || $opt eq "max_jobs_run") { $max_jobs = $val; }
    elsif ($opt eq "config") {
        open(my $cf, "<", $val) or die "slurm.pl: cannot read config $val\n";
        while (<$cf>) { chomp; s/#.*//; push @sbatch_opts, split(" ", $_) if /\S/; }
        close $cf;
    }
    elsif (exists $map{$opt}) { push @sbatch_opts, $map{$opt} . $val unless $opt eq "gpu" && $val == 0; }
    elsif ($opt eq "name") { push @sbatch_opts, "--job-name=$val"; }
    else { die "slurm.pl: unknown option --$opt\n"; }
}
my ($jobname, $start, $end, $ranged) = ("", 1, 1, 0);
if (@ARGV && $ARGV[0] =~ /^([\w_][\w\d_]*)=(\d+):(\d+)$/) {
    ($jobname, $start, $end, $ranged) = ($1, $2, $3, 1);
    shift @ARGV;
}
die "Usage: slurm.pl [options] [JOB=1:N] <log-file> <command...>\n" if @ARGV < 2;
my $logfile = shift @ARGV;
my $cmd = join(" ", map { /^\S+$/ ? $_ : (/"/ ? "'$_'" : "\"$_\"") } @ARGV);
my $sbatch = $ENV{SBATCH} // "sbatch";

my (%running, @failed);
for my $job ($start .. $end) {
    reap() while scalar(keys %running) >= $max_jobs;
    my ($log, $this) = ($logfile, $cmd);
    if ($ranged) { $log =~ s/\b$jobname\b/$job/g; $this =~ s/\b$jobname\b/$job/g; }
    my $dir = ($log =~ m:^(.*)/[^/]*$:) ? $1 : ".";
    system("mkdir", "-p", "$dir/q");
    my $base = $log; $base =~ s:.*/::;
    my $script = "$dir/q/$base.sh";
    open(my $fh, ">", $script) or die "slurm.pl: cannot write $script\n";
    print $fh "#!/usr/bin/env bash\ncd " . `pwd` . "echo '# $this' > '$log'\necho \"# Started at \$(date)\" >> '$log'\n";
    print $fh "( $this ) >> '$log' 2>&1\nret=\$?\necho \"# Ended (code \$ret) at \$(date)\" >> '$log'\nexit \$ret\n";
    close $fh;
    my $pid = fork();
    die "slurm.pl: fork failed\n" unless defined $pid;
    if ($pid == 0) {
        exec($sbatch, "--wait", "--job-name=$base", "--output=$dir/q/$base.out", @sbatch_opts, $script)
            or exit 127;
    }
    $running{$pid} = $log;
}
reap() while %running;
if (@failed) {
    print STDERR "slurm.pl: " . scalar(@failed) . " / " . ($end - $start + 1) . " failed, log is in $failed[0]\n";
    exit 1;
}
exit 0;

sub reap {
    my $pid = wait();
    return if $pid < 0;
    push @failed, $running{$pid} if $? != 0;
    delete $running{$pid};
}
