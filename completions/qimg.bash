# qimg.bash - bash completion for qimg(1).
#
# The options of each subcommand are not listed here: they are read from
# "qimg CMD --help", which is generated from the option tables, so this file
# cannot drift from the binary.  What is known here are the values options
# take: formats, --output, check -r, the -o keys and values of qcow2 and raw,
# and snapshot names, which are read from the image on the command line.
#
# Install as /usr/share/bash-completion/completions/qimg (make install does),
# or source it from ~/.bashrc.  It needs no other completion library.

# The commands qimg has always had; "qimg --help" may list more.
_qimg_known_commands=(amend bitmap check commit compare convert create dd info map measure rebase repair resize snapshot)

# qcow2 "-o" keys for create and convert; amend has its own short list.
_qimg_qcow2_keys="compat= cluster_size= refcount_bits= lazy_refcounts=
preallocation= backing_file= backing_fmt= compression_type= extended_l2=
data_file= data_file_raw= encrypt.format= encrypt.key-secret=
encrypt.cipher-alg= encrypt.cipher-mode= encrypt.ivgen-alg= encrypt.ivgen-hash-alg=
encrypt.hash-alg= encrypt.iter-time= encryption= help"
_qimg_raw_keys="preallocation= help"
_qimg_amend_keys="compat= refcount_bits= lazy_refcounts= size= help"

# Bash splits "--output=json" and "compat=1.1" at '=' and ':' (see
# COMP_WORDBREAKS), and when the cursor is in the blanks between two words
# it points COMP_CWORD at the next word.  Rebuild the words as the user sees
# them from COMP_LINE and COMP_POINT.  Sets _qimg_w (the words), _qimg_cw
# (the index of the word at the cursor, cut at the cursor) and _qimg_pre
# (the part of that word before the text readline replaces, which is cut
# from every reply).
_qimg_glue_words() {
    local i j=-1 n pos=0 w line=$COMP_LINE
    local -a starts=() ends=()
    _qimg_w=() _qimg_cw=-1
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        w=${COMP_WORDS[i]}
        [[ $w ]] || continue
        for ((n = pos; n < ${#line}; n++)); do
            [[ ${line:n:1} == [[:blank:]] ]] || break
        done
        if [[ ${line:n:${#w}} != "$w" ]]; then
            # The line does not match the words: take bash's words as they are.
            _qimg_w=("${COMP_WORDS[@]}") _qimg_cw=$COMP_CWORD
            break
        fi
        if ((j >= 0 && n == pos)) && [[ $w == [=:]* || ${_qimg_w[j]} == *[=:] ]]; then
            _qimg_w[j]+=$w
        else
            _qimg_w[++j]=$w
            starts[j]=$n
        fi
        pos=$((n + ${#w}))
        ends[j]=$pos
    done
    if ((_qimg_cw < 0)); then
        for ((i = 0; i <= j; i++)); do
            if ((starts[i] <= COMP_POINT && COMP_POINT <= ends[i])); then
                _qimg_cw=$i
                _qimg_w[i]=${_qimg_w[i]:0:COMP_POINT-starts[i]}
                break
            fi
            ((starts[i] > COMP_POINT)) && break
        done
    fi
    if ((_qimg_cw < 0)); then
        # The cursor is in blanks: an empty word starts there.
        _qimg_w=("${_qimg_w[@]:0:i}" "" "${_qimg_w[@]:i}")
        _qimg_cw=$i
    fi
    # Readline replaces only what follows the last break character of the
    # word: after "--output=" that is nothing, although bash then reports
    # "=" as the current word.
    local cur=${_qimg_w[_qimg_cw]} breaks=${COMP_WORDBREAKS//[^=:]/}
    _qimg_pre=
    if [[ $breaks && $cur == *["$breaks"]* ]]; then
        _qimg_pre=${cur%"${cur##*["$breaks"]}"}
    fi
}

# Add the words of "$@" that start with $cur to the candidates, each with
# the prefix $pfx put before it.
_qimg_add() {
    local pfx=$1 cur=$2 c
    shift 2
    for c; do
        if [[ $c == "$cur"* ]]; then
            _qimg_c+=("$pfx$c")
        fi
    done
}

# Read "qimg CMD --help" into _qimg_opts (the words to offer, "--long=" for
# a long option that takes a value) and _qimg_argopts (the options that take
# a value).  An option line of the help looks like
#   "  -f, --format=fmt               image format (qcow2 or raw)"
#   "      --output=ofmt              ..."
#   "  -S sparse_size                 ..."
# Returns 1 when the binary gave no help.
_qimg_read_help() {
    local cmd=$1 help line left opt long in_opts=
    _qimg_opts=() _qimg_argopts=()
    help=$("${qimg_bin:-qimg}" "$cmd" --help 2>/dev/null </dev/null) || return 1
    while IFS= read -r line; do
        if [[ $line == Options:* ]]; then
            in_opts=1
            continue
        fi
        [[ $in_opts ]] || continue
        line=${line#"${line%%[![:space:]]*}"}
        [[ $line == -* ]] || continue
        left=${line%%  *}
        opt='' long=''
        read -r opt long _ <<<"$left"
        if [[ $opt == -?, ]]; then # "-x, --long[=ARG]"
            opt=${opt%,}
        elif [[ $opt == --* ]]; then # "--long[=ARG]"
            long=$opt opt=
        elif [[ $long ]]; then # "-x ARG"
            _qimg_argopts+=("$opt")
            long=
        fi
        if [[ $opt ]]; then
            _qimg_opts+=("$opt")
            if [[ $long == *=* ]]; then
                _qimg_argopts+=("$opt")
            fi
        fi
        if [[ $long == *=* ]]; then
            _qimg_opts+=("${long%%=*}=")
            _qimg_argopts+=("${long%%=*}")
        elif [[ $long == --* ]]; then
            _qimg_opts+=("$long")
        fi
    done <<<"$help"
    ((${#_qimg_opts[@]})) || return 1
}

# The options of CMD that take a value: from the help when there is one,
# else from the synopses of the manual pages.
_qimg_value_options() {
    _qimg_read_help "$1" && return
    case $1 in
        snapshot) _qimg_argopts=(-f --format --output --object -c -a -d --rename) ;;
        convert) _qimg_argopts=(-f --format -O -o -B -F -S -l -m --object) ;;
        *) _qimg_argopts=(-f --format -o -b -F -r --output --object) ;;
    esac
}

# Print the positional words (image names) of the line, leaving out the
# current word and the values of options.
_qimg_positionals() {
    local cmd=$1 i w skip='' dashdash=''
    _qimg_value_options "$cmd"
    for ((i = 2; i < ${#_qimg_w[@]}; i++)); do
        w=${_qimg_w[i]}
        if [[ $skip ]]; then
            skip=
            continue
        fi
        ((i == _qimg_cw)) && continue
        if [[ ! $dashdash && $w == -?* ]]; then
            if [[ $w == -- ]]; then
                dashdash=1
            elif [[ $w != *=* && " ${_qimg_argopts[*]} " == *" $w "* ]]; then
                skip=1
            fi
            continue
        fi
        printf '%s\n' "$w"
    done
}

# Print the snapshot names of image $1, one a line: from the JSON list, or
# else from the table of "qimg snapshot -l".
_qimg_snapshot_names() {
    local img=$1 out line name header='' re='^[[:space:]]*"name":[[:space:]]*"(.*)",?[[:space:]]*$'
    [[ $img ]] || return 0
    img=${img/#\~/$HOME}
    if out=$("${qimg_bin:-qimg}" snapshot -l --output=json "$img" 2>/dev/null </dev/null) &&
        [[ $out =~ ^[[:space:]]*\[ ]]; then
        while IFS= read -r line; do
            if [[ $line =~ $re ]]; then
                name=${BASH_REMATCH[1]}
                name=${name//\\\"/\"}
                printf '%s\n' "${name//\\\\/\\}"
            fi
        done <<<"$out"
        return
    fi
    out=$("${qimg_bin:-qimg}" snapshot -l "$img" 2>/dev/null </dev/null) || return 0
    while IFS= read -r line; do
        if [[ $header ]]; then
            read -r _ name _ <<<"$line"
            if [[ $name ]]; then
                printf '%s\n' "$name"
            fi
        elif [[ $line == ID[[:blank:]]* ]]; then
            header=1
        fi
    done <<<"$out"
}

# Offer the snapshot names of image $1 that start with $2, after prefix $3.
_qimg_add_snapshots() {
    local name q
    while IFS= read -r name; do
        [[ $name ]] || continue
        printf -v q '%q' "$name"
        if [[ $name == "$2"* || $q == "$2"* ]]; then
            _qimg_c+=("$3$q")
        fi
    done < <(_qimg_snapshot_names "$1")
}

# Offer the bitmap names of image $1 that start with $2, from the JSON of
# "qimg bitmap --list".
_qimg_add_bitmaps() {
    local img=$1 out line name q re='^[[:space:]]*"name":[[:space:]]*"(.*)",?[[:space:]]*$'
    [[ $img ]] || return 0
    img=${img/#\~/$HOME}
    out=$("${qimg_bin:-qimg}" bitmap --list --output=json "$img" 2>/dev/null </dev/null) ||
        return 0
    while IFS= read -r line; do
        [[ $line =~ $re ]] || continue
        name=${BASH_REMATCH[1]}
        name=${name//\\\"/\"}
        name=${name//\\\\/\\}
        printf -v q '%q' "$name"
        if [[ $name == "$2"* || $q == "$2"* ]]; then
            _qimg_c+=("$q")
        fi
    done <<<"$out"
}

# Is the option $1 a word of the line (before any "--"), other than the
# one at the cursor?
_qimg_line_has() {
    local i
    for ((i = 2; i < ${#_qimg_w[@]}; i++)); do
        ((i == _qimg_cw)) && continue
        [[ ${_qimg_w[i]} == -- ]] && return 1
        [[ ${_qimg_w[i]} == "$1" ]] && return 0
    done
    return 1
}

# The file that the image argument $1 names: with --image-opts on the line,
# the file.filename of the option string (",," is a comma in it), else the
# argument itself.
_qimg_image_file() {
    local w=$1 item file='' items=()
    if ! _qimg_line_has --image-opts; then
        printf '%s\n' "$w"
        return
    fi
    w=${w//,,/$'\1'}
    IFS=, read -ra items <<<"$w"
    for item in "${items[@]}"; do
        if [[ $item == file.filename=* ]]; then
            file=${item#file.filename=}
        fi
    done
    if [[ $file ]]; then
        printf '%s\n' "${file//$'\1'/,}"
    fi
}

# The image a snapshot option refers to: the last name on the line (the
# FILE of "qimg snapshot"); for "convert -l", the first input.
_qimg_image() {
    local cmd=$1 names=()
    mapfile -t names < <(_qimg_positionals "$cmd")
    ((${#names[@]})) || return 0
    if [[ $cmd == convert ]]; then
        _qimg_image_file "${names[0]}"
    else
        _qimg_image_file "${names[-1]}"
    fi
}

# The format named on the line by one of the options "$@" (-f, -O ...).
_qimg_line_format() {
    local i w o
    for ((i = 2; i < ${#_qimg_w[@]}; i++)); do
        w=${_qimg_w[i]}
        for o; do
            if [[ $w == "$o" ]]; then
                printf '%s\n' "${_qimg_w[i + 1]}"
            elif [[ $o == --* && $w == "$o="* ]]; then
                printf '%s\n' "${w#*=}"
            fi
        done
    done
}

# The ids of the secrets defined with --object on the line.
_qimg_secret_ids() {
    local i w
    for ((i = 2; i < ${#_qimg_w[@]}; i++)); do
        w=${_qimg_w[i]}
        if [[ $w == --object=* ]]; then
            w=${w#--object=}
        elif [[ ${_qimg_w[i - 1]} != --object ]]; then
            continue
        fi
        if [[ ,$w, =~ ,id=([^,]*), ]]; then
            printf '%s\n' "${BASH_REMATCH[1]}"
        fi
    done
}

# A "key=value,key=value,..." word: the caller's $head becomes all up to
# and with its last comma, $item what follows it.
_qimg_split_list() {
    head='' item=$1
    if [[ $1 == *,* ]]; then
        head=${1%,*},
        item=${1##*,}
    fi
}

# Offer the keys given that $head does not hold yet, after $head, matching
# $item; no space after them (a value follows).
_qimg_add_keys() {
    local k
    for k; do
        [[ ,$head == *,"$k"* ]] || _qimg_add "$head" "$item" "$k"
    done
    _qimg_nospace=1
}

# Complete an --image-opts option string, "driver=qcow2,file.filename=
# PATH,encrypt.key-secret=ID": after the last comma a key, after its '='
# the values of that key (file names, the secrets defined on the line).
_qimg_complete_image_opts() {
    local head item key val ids files
    _qimg_split_list "$1"
    if [[ $item != *=* ]]; then
        _qimg_add_keys driver= file.filename= encrypt.key-secret= encrypt.format=
        return
    fi
    key=${item%%=*} val=${item#*=}
    head+="$key="
    case $key in
        driver) _qimg_add "$head" "$val" qcow2 raw ;;
        encrypt.format) _qimg_add "$head" "$val" luks aes ;;
        encrypt.key-secret)
            mapfile -t ids < <(_qimg_secret_ids)
            _qimg_add "$head" "$val" "${ids[@]}"
            ;;
        file.filename)
            mapfile -t files < <(compgen -f -- "$val")
            _qimg_add "$head" "" "${files[@]}"
            _qimg_files=1
            ;;
    esac
}

# Complete the value of -o: "key=value,key=value,...".  After the last
# comma, complete a key; after its '=', the values of that key.
_qimg_complete_o() {
    local cmd=$1 head item key val keys fmt
    _qimg_split_list "$2"
    case $cmd in
        amend) fmt=qcow2 ;;
        convert | measure) fmt=$(_qimg_line_format -O) ;;
        *) fmt=$(_qimg_line_format -f --format) ;;
    esac
    fmt=${fmt##*$'\n'} # the last one given counts
    if [[ $item != *=* ]]; then
        if [[ $cmd == amend ]]; then
            keys=$_qimg_amend_keys
        elif [[ $fmt == raw ]]; then
            keys=$_qimg_raw_keys
        else
            keys=$_qimg_qcow2_keys
        fi
        # shellcheck disable=SC2086
        _qimg_add_keys $keys
        return
    fi
    key=${item%%=*} val=${item#*=}
    head+="$key="
    case $key in
        compat) _qimg_add "$head" "$val" 0.10 1.1 v2 v3 ;;
        refcount_bits) _qimg_add "$head" "$val" 1 2 4 8 16 32 64 ;;
        lazy_refcounts | extended_l2 | data_file_raw | encryption) _qimg_add "$head" "$val" on off ;;
        preallocation)
            if [[ $fmt == raw ]]; then
                _qimg_add "$head" "$val" off falloc full
            else
                _qimg_add "$head" "$val" off metadata falloc full
            fi
            ;;
        compression_type) _qimg_add "$head" "$val" zlib zstd ;;
        cluster_size)
            _qimg_add "$head" "$val" 512 1024 2048 4096 8192 16384 32768 \
                65536 131072 262144 524288 1048576 2097152
            ;;
        backing_fmt) _qimg_add "$head" "$val" qcow2 raw ;;
        encrypt.format) _qimg_add "$head" "$val" luks aes ;;
        encrypt.cipher-alg) _qimg_add "$head" "$val" aes-128 aes-192 aes-256 ;;
        encrypt.cipher-mode) _qimg_add "$head" "$val" ecb cbc xts ctr ;;
        encrypt.ivgen-alg) _qimg_add "$head" "$val" plain plain64 essiv ;;
        encrypt.ivgen-hash-alg | encrypt.hash-alg)
            _qimg_add "$head" "$val" md5 sha1 sha224 sha256 sha384 sha512 ripemd160
            ;;
        encrypt.key-secret)
            local ids
            mapfile -t ids < <(_qimg_secret_ids)
            _qimg_add "$head" "$val" "${ids[@]}"
            ;;
        backing_file | data_file)
            local files
            mapfile -t files < <(compgen -f -- "$val")
            _qimg_add "$head" "" "${files[@]}"
            _qimg_files=1
            ;;
    esac
}

# Complete the words after the subcommand.
_qimg_complete_cmd() {
    local cmd=$1 cur=$2 prev=$3 prev2=$4

    # The value of an option given as a separate word.
    case $cmd:$prev in
        *:-f | *:--format | *:-F | *:-O)
            _qimg_add "" "$cur" qcow2 raw
            return
            ;;
        *:--output)
            _qimg_add "" "$cur" human json
            return
            ;;
        check:-r)
            _qimg_add "" "$cur" leaks all
            return
            ;;
        *:-o)
            _qimg_complete_o "$cmd" "$cur"
            return
            ;;
        *:--object)
            _qimg_add "" "$cur" secret,id=
            _qimg_nospace=1
            return
            ;;
        resize:--preallocation)
            _qimg_add "" "$cur" off metadata falloc full
            return
            ;;
        snapshot:-a | snapshot:-d | snapshot:--rename | convert:-l | measure:-l)
            _qimg_add_snapshots "$(_qimg_image "$cmd")" "$cur" ""
            return
            ;;
        bitmap:--merge)
            local names
            mapfile -t names < <(_qimg_positionals "$cmd")
            _qimg_add_bitmaps "$(_qimg_image_file "${names[0]}")" "$cur"
            return
            ;;
        snapshot:-c | *:-S | *:-m | bitmap:-g | map:-s | map:-l | map:--start-offset | map:--max-length | measure:--size)
            return # a new name or a number: nothing to offer
            ;;
    esac
    if [[ $cmd == snapshot && $prev2 == --rename ]]; then
        return # the new name
    fi

    # The value of a long option given after '='.
    case $cmd:$cur in
        map:--start-offset=* | map:--max-length=*)
            return # a number
            ;;
        *:--format=*)
            _qimg_add "--format=" "${cur#*=}" qcow2 raw
            return
            ;;
        *:--output=*)
            _qimg_add "--output=" "${cur#*=}" human json
            return
            ;;
        snapshot:--rename=*)
            _qimg_add_snapshots "$(_qimg_image "$cmd")" "${cur#*=}" "--rename="
            return
            ;;
        resize:--preallocation=*)
            _qimg_add "--preallocation=" "${cur#*=}" off metadata falloc full
            return
            ;;
        dd:if=* | dd:of=*)
            local files
            mapfile -t files < <(compgen -f -- "${cur#*=}")
            _qimg_add "${cur%%=*}=" "" "${files[@]}"
            _qimg_files=1
            return
            ;;
        *:--object=*)
            _qimg_add "--object=" "${cur#*=}" secret,id=
            _qimg_nospace=1
            return
            ;;
    esac

    # Options, as the binary lists them.
    if [[ $cur == -* ]]; then
        _qimg_read_help "$cmd" || return 0
        _qimg_add "" "$cur" "${_qimg_opts[@]}"
        local c
        for c in "${_qimg_c[@]}"; do
            if [[ $c == *= ]]; then
                _qimg_nospace=1
            fi
        done
        return
    fi

    # dd takes operands, not file names.
    if [[ $cmd == dd ]]; then
        _qimg_add "" "$cur" if= of= bs= count= skip=
        _qimg_nospace=1
        return
    fi

    # After the FILE of "qimg bitmap": its bitmaps.
    if [[ $cmd == bitmap ]]; then
        local names
        mapfile -t names < <(_qimg_positionals "$cmd")
        if ((${#names[@]})); then
            _qimg_add_bitmaps "$(_qimg_image_file "${names[0]}")" "$cur"
            return
        fi
    fi

    # With --image-opts the image is an option string (convert's output
    # may still be a file name; rebase -b and the like stay file names).
    _qimg_value_options "$cmd"
    if _qimg_line_has --image-opts && [[ " ${_qimg_argopts[*]} " != *" $prev "* ]]; then
        _qimg_complete_image_opts "$cur"
        if [[ $cmd == convert && $cur != *[=,]* ]]; then
            mapfile -t -O "${#_qimg_c[@]}" _qimg_c < <(compgen -f -- "$cur")
            _qimg_files=1
        fi
        return
    fi

    # Anything else is a file.
    mapfile -t _qimg_c < <(compgen -f -- "$cur")
    _qimg_files=1
}

# The commands to offer: those qimg has always had, and any other that
# "qimg --help" lists under "Commands:".
_qimg_commands() {
    local line in_cmds=''
    {
        printf '%s\n' "${_qimg_known_commands[@]}"
        while IFS= read -r line; do
            if [[ $line == Commands:* ]]; then
                in_cmds=1
            elif [[ $in_cmds && $line =~ ^\ +([a-z][a-z0-9-]*)\  ]]; then
                printf '%s\n' "${BASH_REMATCH[1]}"
            elif [[ $in_cmds && -z $line ]]; then
                in_cmds=''
            fi
        done < <("${qimg_bin:-qimg}" --help 2>/dev/null </dev/null)
    } | sort -u
}

_qimg() {
    local qimg_bin _qimg_w _qimg_cw _qimg_pre _qimg_c=() _qimg_nospace='' _qimg_files=''
    local _qimg_opts _qimg_argopts _qimg_cmds cur prev prev2 cmd c
    COMPREPLY=()
    _qimg_glue_words
    cur=${_qimg_w[_qimg_cw]}
    prev=${_qimg_w[_qimg_cw - 1]}
    if ((_qimg_cw >= 2)); then
        prev2=${_qimg_w[_qimg_cw - 2]}
    fi

    # Ask the binary as it was typed (./qimg, ~/bin/qimg), else qimg.
    qimg_bin=${COMP_WORDS[0]/#\~/$HOME}
    if [[ $qimg_bin == */* ]]; then
        [[ -x $qimg_bin && ! -d $qimg_bin ]] || qimg_bin=qimg
    else
        type -P "$qimg_bin" >/dev/null 2>&1 || qimg_bin=qimg
    fi

    if ((_qimg_cw == 1)); then
        if [[ $cur == -* ]]; then
            _qimg_add "" "$cur" --help --version
        else
            mapfile -t _qimg_cmds < <(_qimg_commands)
            _qimg_add "" "$cur" "${_qimg_cmds[@]}" help
        fi
    elif [[ ${_qimg_w[1]} == help ]]; then
        if ((_qimg_cw == 2)); then
            mapfile -t _qimg_cmds < <(_qimg_commands)
            _qimg_add "" "$cur" "${_qimg_cmds[@]}"
        fi
    else
        cmd=${_qimg_w[1]}
        _qimg_complete_cmd "$cmd" "$cur" "$prev" "$prev2"
    fi

    # Cut what bash keeps in front of the piece of the word it replaces.
    for c in "${_qimg_c[@]}"; do
        if [[ $c == "$_qimg_pre"* ]]; then
            COMPREPLY+=("${c#"$_qimg_pre"}")
        fi
    done
    # compopt only works while bash is completing; tests call _qimg directly.
    if [[ $_qimg_nospace ]]; then
        compopt -o nospace 2>/dev/null || :
    fi
    if [[ $_qimg_files ]]; then
        compopt -o filenames 2>/dev/null || :
    fi
    return 0
}

complete -F _qimg qimg
