from cnn_tune.cli.main import main

main()
