from dnet.cli import main

main(prog_name="dnet")
