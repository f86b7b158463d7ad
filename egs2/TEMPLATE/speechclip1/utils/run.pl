#!/usr/bin/env perl
# run.pl: run a command (or an array of jobs) on this machine, output to a log file.
# A small re-implementation of Kaldi's utils/run.pl with the same command-line interface, for
# machines without a Kaldi checkout (espnet2.bin.launch recognises it by name).
#
# Usage: run.pl [options] [JOB=1:N] <log-file> <command...>
#   --gpu N | --mem M | --num-threads N | --num_threads N | --num_nodes N | --config F : accepted,
#       resources are not enforced locally
#   --max-jobs-run N : at most N jobs at once (default: number of cores)
# With JOB=1:N the string JOB in the log name and command is replaced by 1..N.
# Exit status 0 iff every job succeeded; failures are reported with their log file.
use strict;
use warnings;
use POSIX qw(strftime);

my $max_jobs = `nproc 2>/dev/null` || 1;
chomp $max_jobs;
while (@ARGV && $ARGV[0] =~ /^--(\S+)$/) {
    my $opt = $1;
    shift @ARGV;
    die "run.pl: option --$opt needs a value\n" unless @ARGV;
    my $val = shift @ARGV;
    if ($opt eq "max-jobs-run" || $opt eq "max_jobs_run") { $max_jobs = $val; }
    elsif ($opt !~ /^(gpu|mem|num-threads|num_threads|num_nodes|config|time|name)$/) {
        die "run.pl: unknown option --$opt\n";
    }
}
my ($jobname, $start, $end) = ("", 1, 1);
my $ranged = 0;
if (@ARGV && $ARGV[0] =~ /^([\w_][\w\d_]*)=(\d+):(\d+)$/) {
    ($jobname, $start, $end, $ranged) = ($1, $2, $3, 1);
    shift @ARGV;
    die "run.pl: invalid range $start:$end\n" if $start > $end;
} elsif (@ARGV && $ARGV[0] =~ /^([\w_][\w\d_]*)=(\d+)$/) {
    ($jobname, $start, $end, $ranged) = ($1, $2, $2, 1);
    shift @ARGV;
}
die "Usage: run.pl [options] [JOB=1:N] <log-file> <command...>\n" if @ARGV < 2;
my $logfile = shift @ARGV;
# As Kaldi: an argument without whitespace is taken as is (so "|" and "&&" keep their meaning).
my $cmd = join(" ", map { /^\S+$/ ? $_ : (/"/ ? "'$_'" : "\"$_\"") } @ARGV);

my %running;
my @failed;
for my $job ($start .. $end) {
    while (scalar(keys %running) >= $max_jobs) { reap(); }
    my ($log, $this) = ($logfile, $cmd);
    if ($ranged) { $log =~ s/\b$jobname\b/$job/g; $this =~ s/\b$jobname\b/$job/g; }
    my $dir = $log; $dir =~ s:/[^/]*$::;
    system("mkdir", "-p", $dir) if $dir ne $log;
    my $pid = fork();
    die "run.pl: fork failed\n" unless defined $pid;
    if ($pid == 0) {
        open(my $fh, ">", $log) or die "run.pl: cannot write $log\n";
        print $fh "# $this\n# Started at " . localtime() . "\n#\n";
        close $fh;
        my $t0 = time();
        my $ret = system("bash", "-c", "( $this ) >>'$log' 2>&1");
        my $code = $ret == -1 ? 127 : ($ret & 127 ? 128 + ($ret & 127) : $ret >> 8);
        open($fh, ">>", $log);
        printf $fh "# Accounting: time=%d threads=1\n# Ended (code %d) at %s, elapsed time %d seconds\n",
            time() - $t0, $code, scalar(localtime()), time() - $t0;
        close $fh;
        exit($code > 255 ? 255 : $code);
    }
    $running{$pid} = $log;
}
reap() while %running;
if (@failed) {
    my $n = $end - $start + 1;
    print STDERR "run.pl: " . scalar(@failed) . " / $n failed, log is in $failed[0]\n";
    exit 1;
}
exit 0;

sub reap {
    my $pid = wait();
    return if $pid < 0;
    push @failed, $running{$pid} if $? != 0;
    delete $running{$pid};
}
