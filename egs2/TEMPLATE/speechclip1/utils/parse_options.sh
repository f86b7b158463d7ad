#!/usr/bin/env bash
# parse_options.sh: Kaldi-style option parsing, sourced by recipe scripts after their defaults.
# For every "--name value" (or "--name=value") whose variable "name" (dashes read as underscores)
# is already defined, set it; "--config file" sources a file of defaults first; "--help" prints
# $help_message. An unknown option or a missing value is an error. Same interface as Kaldi's
# utils/parse_options.sh, for machines without a Kaldi checkout.
this_script=parse_options.sh
for ((argpos = 1; argpos < $#; argpos++)); do
    if [ "${!argpos}" == "--config" ]; then
        argpos_plus1=$((argpos + 1))
        config=${!argpos_plus1}
        [ ! -r "$config" ] && echo "$0: missing config '$config'" 1>&2 && exit 1
        . "$config"
    fi
done

while true; do
    [ -z "${1:-}" ] && break
    case "$1" in
        --help|-h)
            if [ -z "${help_message:-}" ]; then echo "No help found." 1>&2; else printf "%s\n" "$help_message" 1>&2; fi
            exit 0 ;;
        --*=*)
            name=$(echo "${1%%=*}" | sed 's/^--//; s/-/_/g')
            value="${1#*=}"
            shift
            set -- "--$name" "$value" "$@" ;;
        --*)
            name=$(echo "$1" | sed 's/^--//; s/-/_/g')
            if ! eval "[ -n \"\${${name}+x}\" ]"; then
                echo "$0: invalid option $1" 1>&2
                exit 1
            fi
            if [ $# -lt 2 ]; then
                echo "$0: option $1 needs a value" 1>&2
                exit 1
            fi
            was_bool=$(eval "echo \$$name")
            eval "$name=\"\$2\""
            if [ "$was_bool" == "true" ] || [ "$was_bool" == "false" ]; then
                case "$2" in true|false) ;; *) echo "$0: expected true or false for $1, got $2" 1>&2; exit 1 ;; esac
            fi
            shift 2 ;;
        *) break ;;
    esac
done
true
