from realcast_box.cli import main

if __name__ == "__main__":
    main()
