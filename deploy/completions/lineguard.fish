# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_lineguard_global_optspecs
    string join \n h/help V/version
end

function __fish_lineguard_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_lineguard_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_lineguard_using_subcommand
    set -l cmd (__fish_lineguard_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c lineguard -n "__fish_lineguard_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lineguard -n "__fish_lineguard_needs_command" -s V -l version -d 'Print version'
complete -c lineguard -n "__fish_lineguard_needs_command" -f -a "run" -d 'Run the daemon'
complete -c lineguard -n "__fish_lineguard_needs_command" -f -a "check-config" -d 'Validate the configuration (and its models) and print the effective settings, secrets masked'
complete -c lineguard -n "__fish_lineguard_needs_command" -f -a "check-model" -d 'Load a model and its card, print what lineguard feeds and reads, run and time a test inference'
complete -c lineguard -n "__fish_lineguard_needs_command" -f -a "demo" -d 'Zero set-up demo: embedded broker, simulated line with faults, the daemon, live scores'
complete -c lineguard -n "__fish_lineguard_needs_command" -f -a "simulate" -d 'Publish a simulated line (with faults) to a real broker'
complete -c lineguard -n "__fish_lineguard_needs_command" -f -a "record" -d 'Record every pipeline\'s telemetry, as it arrives, to a JSON Lines file'
complete -c lineguard -n "__fish_lineguard_needs_command" -f -a "replay" -d 'Score a recording or a CSV table offline, exactly as the daemon would, and write what it would publish'
complete -c lineguard -n "__fish_lineguard_needs_command" -f -a "assets" -d 'Write the man pages and shell completions (for packaging)'
complete -c lineguard -n "__fish_lineguard_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lineguard -n "__fish_lineguard_using_subcommand run" -l config -d 'The configuration file (TOML); LINEGUARD_* environment variables override it' -r -F
complete -c lineguard -n "__fish_lineguard_using_subcommand run" -s h -l help -d 'Print help'
complete -c lineguard -n "__fish_lineguard_using_subcommand check-config" -l config -d 'The configuration file (TOML); LINEGUARD_* environment variables override it' -r -F
complete -c lineguard -n "__fish_lineguard_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c lineguard -n "__fish_lineguard_using_subcommand check-model" -l card -d 'The card, if not MODEL.toml beside the model' -r -F
complete -c lineguard -n "__fish_lineguard_using_subcommand check-model" -s h -l help -d 'Print help'
complete -c lineguard -n "__fish_lineguard_using_subcommand demo" -l duration -d 'Stop after this many seconds and print a summary (default: until Ctrl-C)' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand demo" -l machines -d 'Machines on the simulated line' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand demo" -l rate -d 'Samples per second per machine' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand demo" -l model -d 'Serve this model (with its card beside it) instead of the shipped one' -r -F
complete -c lineguard -n "__fish_lineguard_using_subcommand demo" -l port -d 'Broker port (default: a free one)' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand demo" -l format -d 'The payload shape the simulated line publishes in; for any but `lineguard` the model\'s card is given a sampling clock at the line\'s rate (`sample_period_ms`), so lineguard forms the samples itself' -r -f -a "lineguard\t''
telegraf\t''
tag\t''
kepware\t''
opcua-json\t''
sparkplug\t'Sparkplug B: a DBIRTH per machine first, then DDATA, metrics by name'"
complete -c lineguard -n "__fish_lineguard_using_subcommand demo" -l redundant -d 'A primary and a backup lineguard (`[redundancy]`), each its own process: the primary is killed (`kill -9`) a third of the way in and started again halfway; the summary counts every window of every machine (scored, duplicates, failovers, gaps). 45 s unless `--duration` says otherwise'
complete -c lineguard -n "__fish_lineguard_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lineguard -n "__fish_lineguard_using_subcommand simulate" -l host -d 'The broker\'s host name or address' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand simulate" -l port -d 'The broker\'s port' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand simulate" -l machines -d 'Machines on the line' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand simulate" -l rate -d 'Samples per second per machine' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand simulate" -l duration -d 'Stop after this many seconds (default: run until Ctrl-C)' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand simulate" -l seed -d 'Seed of the simulation\'s noise (the same seed gives the same line)' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand simulate" -l format -d 'The payload shape, as a plant\'s gateway would publish it (topics: lineguard `plant/{line}/{machine}/telemetry`, telegraf `telegraf/{line}/{machine}`, tag `uns/{line}/{machine}/{feature}`, kepware `iotgateway/{line}`, opcua-json `azure-iot-operations/data/{line}/{machine}`, sparkplug `spBv1.0/{line}/DDATA/sim/{machine}` after a DBIRTH per machine, metrics by name)' -r -f -a "lineguard\t''
telegraf\t''
tag\t''
kepware\t''
opcua-json\t''
sparkplug\t'Sparkplug B: a DBIRTH per machine first, then DDATA, metrics by name'"
complete -c lineguard -n "__fish_lineguard_using_subcommand simulate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lineguard -n "__fish_lineguard_using_subcommand record" -l config -d 'The configuration file (TOML): its broker settings and its pipelines\' input topics' -r -F
complete -c lineguard -n "__fish_lineguard_using_subcommand record" -l output -d 'The JSON Lines file to write (created, or replaced)' -r -F
complete -c lineguard -n "__fish_lineguard_using_subcommand record" -l duration -d 'Stop after this many seconds (default: until Ctrl-C)' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand record" -s h -l help -d 'Print help'
complete -c lineguard -n "__fish_lineguard_using_subcommand replay" -l config -d 'The configuration file (TOML): its pipelines, models and limits (no broker is contacted)' -r -F
complete -c lineguard -n "__fish_lineguard_using_subcommand replay" -l input -d 'A recording (JSON Lines, from `lineguard record`) or a table of samples (`.csv`, header `device,ts,<features...>`); `-`: standard input' -r -F
complete -c lineguard -n "__fish_lineguard_using_subcommand replay" -l output -d 'The JSON Lines file to write: one `{"topic", "payload"}` per message the daemon would publish; `-`: standard output' -r -F
complete -c lineguard -n "__fish_lineguard_using_subcommand replay" -l pipeline -d 'Replay only this pipeline: the one a CSV table is fed to (default: the only one), or one of a recording\'s' -r
complete -c lineguard -n "__fish_lineguard_using_subcommand replay" -s h -l help -d 'Print help'
complete -c lineguard -n "__fish_lineguard_using_subcommand assets" -l out -d 'Where to write `man/*.1` and `completions/{bash,zsh,fish}`' -r -F
complete -c lineguard -n "__fish_lineguard_using_subcommand assets" -s h -l help -d 'Print help'
complete -c lineguard -n "__fish_lineguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config check-model demo simulate record replay assets help" -f -a "run" -d 'Run the daemon'
complete -c lineguard -n "__fish_lineguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config check-model demo simulate record replay assets help" -f -a "check-config" -d 'Validate the configuration (and its models) and print the effective settings, secrets masked'
complete -c lineguard -n "__fish_lineguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config check-model demo simulate record replay assets help" -f -a "check-model" -d 'Load a model and its card, print what lineguard feeds and reads, run and time a test inference'
complete -c lineguard -n "__fish_lineguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config check-model demo simulate record replay assets help" -f -a "demo" -d 'Zero set-up demo: embedded broker, simulated line with faults, the daemon, live scores'
complete -c lineguard -n "__fish_lineguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config check-model demo simulate record replay assets help" -f -a "simulate" -d 'Publish a simulated line (with faults) to a real broker'
complete -c lineguard -n "__fish_lineguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config check-model demo simulate record replay assets help" -f -a "record" -d 'Record every pipeline\'s telemetry, as it arrives, to a JSON Lines file'
complete -c lineguard -n "__fish_lineguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config check-model demo simulate record replay assets help" -f -a "replay" -d 'Score a recording or a CSV table offline, exactly as the daemon would, and write what it would publish'
complete -c lineguard -n "__fish_lineguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config check-model demo simulate record replay assets help" -f -a "assets" -d 'Write the man pages and shell completions (for packaging)'
complete -c lineguard -n "__fish_lineguard_using_subcommand help; and not __fish_seen_subcommand_from run check-config check-model demo simulate record replay assets help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
