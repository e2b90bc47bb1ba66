from billops.cli import main

main()
